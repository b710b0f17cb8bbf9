"""Train a representation: ``python train.py method=simclr [key=value ...]``.

A thin wrapper: the same Hydra app is installed as ``contrastive-train``
(:func:`contrastive.cli.train.train_main`; ``python train.py --help`` lists the config groups).
"""

from contrastive.cli.train import train_main as main

if __name__ == "__main__":
    main()
