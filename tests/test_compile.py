"""The compiled and eager paths compute the same loss on a fixed batch."""

import pytest
import torch

from contrastive.config.compose import load_config
from contrastive.config.plugins import load_builtin_methods
from contrastive.engine.method import DataInfo
from contrastive.core.registry import METHODS
from tests.conftest import FAST


def _simclr(compile_flag: bool):
    cfg = load_config(FAST + [f"trainer.compile={str(compile_flag).lower()}", "trainer.compile_backend=aot_eager"])
    load_builtin_methods()
    torch.manual_seed(0)
    data = DataInfo(num_classes=10, image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3, num_train=64)
    model = METHODS.get("simclr")(cfg, data)
    model.configure_model()
    return model.eval()  # eval: BN uses running stats, so both paths see identical inputs to every layer


@pytest.mark.skipif(not hasattr(torch, "compile"), reason="torch.compile unavailable")
@pytest.mark.slow
def test_compiled_and_eager_losses_match():
    eager, compiled = _simclr(False), _simclr(True)
    assert getattr(compiled, "_compiled", False) and not getattr(eager, "_compiled", False)
    g = torch.Generator().manual_seed(1)
    views = [torch.randn(8, 3, 32, 32, generator=g) for _ in range(2)]
    with torch.no_grad():
        a = eager.training_losses(views, None, None)["loss"]
        b = compiled.training_losses(views, None, None)["loss"]
    assert torch.allclose(a, b, atol=1e-5), (a, b)
    # compiling in place keeps the state-dict keys, so checkpoints stay loadable
    assert list(eager.state_dict()) == list(compiled.state_dict())
