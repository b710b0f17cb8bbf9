"""Per-epoch clustering state (contrastive.clustering.assignments): not a buffer (DDP broadcasts every
buffer before each forward), yet in state_dict under the old buffer keys, round-tripping, following
``.to``; and none of the prototype methods keeps a per-sample or per-prototype table in a buffer."""

import pytest
import torch
from torch import nn

from contrastive.clustering.assignments import EpochStateMixin, unassigned
from contrastive.config.compose import load_config
from contrastive.config.plugins import load_builtin_methods
from contrastive.core.registry import METHODS
from contrastive.engine.method import DataInfo
from tests.conftest import SMALL_HEADS

load_builtin_methods()
DATA = DataInfo(num_classes=10, image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3, num_train=64)


class _Tiny(EpochStateMixin, nn.Module):
    def __init__(self, as_buffers: bool = False) -> None:
        super().__init__()
        self.head = nn.Linear(2, 2)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        register = self.register_buffer if as_buffers else self.register_epoch_state
        register("assignments", unassigned(2, 6))
        register("centroids", torch.zeros(3, 2))


def test_epoch_state_is_checkpointed_under_the_buffer_keys_but_not_broadcast():
    model = _Tiny()
    assert dict(model.named_buffers()).keys() == {"step"}  # what DDP broadcasts every step
    assert model.state_dict().keys() == _Tiny(as_buffers=True).state_dict().keys()
    model.assignments.copy_(torch.arange(12).view(2, 6) % 3)
    model.centroids += 0.5
    for target in (_Tiny(), _Tiny(as_buffers=True)):  # to a new model, and to the old buffer layout
        target.load_state_dict(model.state_dict())
        assert torch.equal(target.assignments, model.assignments) and torch.equal(target.centroids, model.centroids)
    restored = _Tiny()
    restored.load_state_dict(_Tiny(as_buffers=True).state_dict())  # a checkpoint written with buffers
    assert bool((restored.assignments < 0).all())


def test_epoch_state_follows_to_and_rejects_bad_checkpoints():
    model = _Tiny().to("meta")  # no GPU here: the meta device shows that .to() reaches the state
    assert model.assignments.device.type == model.centroids.device.type == "meta"
    model = _Tiny().half()
    assert model.centroids.dtype == torch.float16 and model.assignments.dtype == torch.long
    state = _Tiny().state_dict()
    state["assignments"] = unassigned(2, 5)
    with pytest.raises(RuntimeError, match=r"size mismatch for assignments"):
        _Tiny().load_state_dict(state)
    del state["assignments"]
    with pytest.raises(RuntimeError, match=r"Missing key\(s\).*assignments"):
        _Tiny().load_state_dict(state)
    with pytest.raises(ValueError, match="'step' is already a parameter, buffer or submodule"):
        _Tiny().register_epoch_state("step", torch.zeros(1))


@pytest.mark.parametrize("name, extra", [
    ("spcl", ["method.num_prototypes=[4,8]", "method.projection.hidden_dim=32", "method.projection.output_dim=16"]),
    ("deepclusterv2", SMALL_HEADS["deepclusterv2"]),
    ("pclv2", SMALL_HEADS["pclv2"]),
])
def test_prototype_methods_keep_no_per_sample_table_in_a_buffer(name, extra):
    cfg = load_config([f"method={name}", "backbone.kwargs.width=4", "batch_size=16", *extra])
    METHODS.get(name).validate_config(cfg, DATA)
    model = METHODS.get(name)(cfg, DATA)
    big = {key: tuple(b.shape) for key, b in model.named_buffers() if b.numel() > DATA.num_train}
    assert not big, big
    state = model.state_dict()
    assert state["assignments"].shape == (2, DATA.num_train) and bool((state["assignments"] < 0).all())
    if name == "pclv2":
        assert state["centroids_1"].shape == (8, 16) and state["concentration_1"].shape == (8,)
