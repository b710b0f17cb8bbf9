"""Training: the ``Method`` base class (``method``), the classifier base of ImCLR and the Π-model
(``supervised``), optimisers and schedules (``optim``), checkpoints, the non-finite guard
(``nonfinite``), split embedding (``embedding``), trackers, plots, and ``run`` (build a run from
a config and fit it)."""
