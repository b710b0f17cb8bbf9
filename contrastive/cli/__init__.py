"""The command lines: ``contrastive-train`` / ``train.py`` (``train``), ``contrastive-eval`` /
``linear_eval.py`` (``eval``) and the Hydra app both run in (``hydra_app``). The top layer."""
