"""Evaluation of trained encoders: linear probe, fine-tuning, weighted kNN, reports, export.

``linear_eval.py`` is a thin wrapper: :func:`prepare` checks every input and builds
the setup (nothing is extracted or trained yet), :func:`evaluate` runs the protocols.

Modules: ``loading`` (checkpoint, configs, model, dataset), ``features`` (frozen
extraction + cache), ``probe`` (linear classifier on features), ``finetune``,
``report`` (tables, JSON, results summary, t-SNE plot), ``export`` (plain state_dict).
"""

from contrastive.evaluation.loading import MODES, EvalSetup, prepare
from contrastive.evaluation.runner import evaluate

__all__ = ["MODES", "EvalSetup", "evaluate", "prepare"]
