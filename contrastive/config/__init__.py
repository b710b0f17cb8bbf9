"""Run configs: Hydra composition and validation (``compose``), command-line override parsing shared by
the command lines (``overrides``) and user plugins (``plugins``)."""
