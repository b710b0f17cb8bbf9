"""Hydra SearchPathPlugin: config folders that installed plugin packages declare.

A package that ships methods (or backbones, datasets) with their YAML declares the
folder in the ``contrastive.configs`` entry-point group of its ``pyproject.toml``::

    [project.entry-points."contrastive.configs"]
    my_methods = "my_methods.configs"      # a package holding method/<name>.yaml ...

and every ``contrastive-train`` / ``contrastive-eval`` run (and ``load_config``) then finds
``method=<name>`` without ``hydra.searchpath=[...]`` on the command line. Hydra discovers
this module through its ``hydra_plugins`` namespace (the only place it looks).
"""

from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

ENTRY_POINT_GROUP = "contrastive.configs"


def plugin_config_sources() -> list:
    """``pkg://`` (or ``file://``) search-path entries of the installed config entry points."""
    from importlib.metadata import entry_points

    sources = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        value = ep.value.strip()
        sources.append(value if "://" in value else f"pkg://{value}")
    return sources


class ContrastiveSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for source in plugin_config_sources():
            search_path.append(provider="contrastive-plugin", path=source)
