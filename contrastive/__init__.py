"""contrastive: fast, faithful contrastive and self-supervised representation learning.

The public API for writing a method: :class:`Method` (base class), ``METHODS``
(the registry to decorate it with) and :class:`ConfigError` (for bad settings).
"""

from contrastive.errors import CheckpointError, ConfigError, ContrastiveError, DatasetError
from contrastive.registry import BACKBONES, DATASETS, METHODS, Registry

__version__ = "0.1.0"


def __getattr__(name):
    # Method pulls in Lightning; import it lazily so `import contrastive` stays cheap.
    if name in ("Method", "DataInfo"):
        from contrastive import method

        return getattr(method, name)
    raise AttributeError(f"module 'contrastive' has no attribute {name!r}")


__all__ = [
    "BACKBONES", "DATASETS", "METHODS", "Registry", "Method", "DataInfo",
    "ConfigError", "ContrastiveError", "DatasetError", "CheckpointError",
]
