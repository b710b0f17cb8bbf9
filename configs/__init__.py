"""The YAML configs of ``contrastive`` (installed as ``contrastive.configs``; no Python here)."""
