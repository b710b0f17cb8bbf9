"""Run configs: Hydra composition and validation (``compose``), the command-line override parser both
command lines use (``overrides``), the structured-config schemas of the trainer/optimizer/scheduler
blocks (``schema``), one-line error messages (``messages``) and user plugins (``plugins``)."""
