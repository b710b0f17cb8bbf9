"""Evaluate a trained encoder: ``python linear_eval.py [checkpoint=...] [key=value ...]``.

A thin wrapper: the same command is installed as ``contrastive-eval``
(:func:`contrastive.cli.eval.main`; ``python linear_eval.py --help`` lists the options).
"""

from contrastive.cli.eval import main

if __name__ == "__main__":
    main()
