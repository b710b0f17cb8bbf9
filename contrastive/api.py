"""Library use: a ready LightningModule for your own ``Trainer`` and data.

Example::

    import pytorch_lightning as pl
    import contrastive

    model = contrastive.build_method(
        "simclr", overrides=["backbone=resnet18", "method.temperature=0.2"],
        data={"num_classes": 10, "image_size": 32, "mean": (0.49, 0.48, 0.45),
              "std": (0.25, 0.24, 0.26), "num_train": 50_000},
    )
    pl.Trainer(max_epochs=100).fit(model, train_dataloaders=loader)

``loader`` yields ``(images, labels, indices)``: uint8 ``[B, 3, S, S]`` images at the
training size, int64 labels (``-1`` when unknown) and int64 sample indices. The method
augments each batch on the training device (``model.augment``: uint8 ``[B,3,S,S]`` ->
one float view) and builds its optimizer and schedule from the config, sized by the
Trainer's ``estimated_stepping_batches``. SPCL needs the whole training set each epoch
(its k-means) and ImCLR needs labels: train those with ``contrastive-train`` or
``contrastive.engine.run`` (a dataset plugin brings your own data there).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence, Union

from contrastive.core.errors import ConfigError


def build_method(name: str, overrides: Sequence[str] = (), data: Union[Mapping[str, Any], Any] = None,
                 plugins: Sequence[str] = ()):
    """Build method ``name`` with the config ``contrastive-train method=<name> <overrides>`` would use.

    Args:
        name: A registered method (``contrastive.METHODS.names()``; plugins too).
        overrides: Command-line style overrides (``"method.temperature=0.2"``, ``"backbone=resnet18"``).
        data: The dataset facts: a :class:`contrastive.DataInfo` or a mapping with
            ``num_classes``, ``image_size``, ``mean``, ``std`` and ``num_train``
            (``train_fully_labeled`` optional, default true).
        plugins: Modules or ``.py`` files that register the method (as ``plugins=[...]``).

    Returns:
        The :class:`contrastive.Method` (a ``pytorch_lightning.LightningModule``); its
        resolved config is ``model.cfg``.

    Raises:
        ConfigError: An unknown method or key, a bad value, or missing dataset facts.
    """
    from contrastive.config.compose import load_config
    from contrastive.config.plugins import import_plugins, load_builtin_methods
    from contrastive.engine.run import validate_config
    from contrastive.engine.method import DataInfo
    from contrastive.core.registry import METHODS

    extra = [f"plugins=[{','.join(plugins)}]"] if plugins else []
    cfg = load_config([f"method={name}", *extra, *overrides])
    import_plugins(cfg.plugins, names=(cfg.method.name, cfg.backbone.name))
    load_builtin_methods()
    validate_config(cfg)
    info = _data_info(data, DataInfo)
    method_cls = METHODS.get(cfg.method.name)
    method_cls.validate_config(cfg, info)
    return method_cls(cfg, info)


def _data_info(data: Any, data_info_cls: type) -> Any:
    if isinstance(data, data_info_cls):
        return data
    needed = ("num_classes", "image_size", "mean", "std", "num_train")
    if not isinstance(data, Mapping) or any(k not in data for k in needed):
        given = sorted(data) if isinstance(data, Mapping) else type(data).__name__
        raise ConfigError(f"data must be a DataInfo or a mapping with {', '.join(needed)}; got {given}")
    return data_info_cls(num_classes=int(data["num_classes"]), image_size=int(data["image_size"]),
                         mean=tuple(float(v) for v in data["mean"]), std=tuple(float(v) for v in data["std"]),
                         num_train=int(data["num_train"]), train_fully_labeled=bool(data.get("train_fully_labeled", True)))
