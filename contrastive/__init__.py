"""contrastive: fast, faithful contrastive and self-supervised representation learning.

The public API for writing a method: :class:`Method` (base class), ``METHODS``
(the registry to decorate it with) and :class:`ConfigError` (for bad settings). For
your own Trainer and data: :func:`build_method` (see :mod:`contrastive.api`).
"""

from contrastive.core.errors import CheckpointError, ConfigError, ContrastiveError, DatasetError
from contrastive.core.registry import BACKBONES, DATASETS, METHODS, Registry

__version__ = "0.1.0"


def __getattr__(name):
    # Method pulls in Lightning; import it lazily so `import contrastive` stays cheap.
    if name in ("Method", "DataInfo"):
        from contrastive.engine import method

        return getattr(method, name)
    if name == "build_method":
        from contrastive.api import build_method

        return build_method
    if name == "load_config":
        from contrastive.config.compose import load_config

        return load_config
    raise AttributeError(f"module 'contrastive' has no attribute {name!r}")


__all__ = [
    "BACKBONES", "DATASETS", "METHODS", "Registry", "Method", "DataInfo", "build_method", "load_config",
    "ConfigError", "ContrastiveError", "DatasetError", "CheckpointError",
]
