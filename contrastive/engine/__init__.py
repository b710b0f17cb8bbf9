"""Training: the ``Method`` base class (``method``), optimisers and schedules (``optim``), checkpoints,
the non-finite guard, trackers, plots, and ``run`` (build a run from a config and fit it)."""
