"""InsDis: the memory-bank refresh against its formula (one momentum step, re-normalised) and the
bank's two starts (random unit vectors, or one pass of the initial network)."""

import pytest
import torch
import torch.nn.functional as F

from contrastive.config.compose import load_config
from contrastive.config.plugins import load_builtin_methods
from contrastive.core.errors import ConfigError
from contrastive.core.registry import METHODS
from contrastive.engine.method import DataInfo
from tests.conftest import SMALL_HEADS

load_builtin_methods()
DATA = DataInfo(num_classes=10, image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3, num_train=64)


def _model(*extra):
    cfg = load_config(["method=insdis", "backbone.kwargs.width=4", "batch_size=16", *SMALL_HEADS["insdis"], *extra])
    METHODS.get("insdis").validate_config(cfg, DATA)
    torch.manual_seed(0)
    return METHODS.get("insdis")(cfg, DATA).train()


def test_a_step_refreshes_the_bank_once_with_momentum_and_renormalises():
    model = _model("method.bank_momentum=0.5")
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    views, labels = model.make_views(images, torch.zeros(16, dtype=torch.long))
    indices = torch.arange(16) * 4  # [B] sample ids 0, 4, ..., 60
    old = model.bank.features.clone()  # [N, d]
    model.training_losses(views, labels, indices)
    with torch.no_grad():
        f = model.project(views[0])  # [B, d]
    # "v_i <- m v_i + (1 - m) f_i", then l2-normalised
    expected = F.normalize(0.5 * old[indices] + 0.5 * f, dim=1)
    assert torch.allclose(model.bank.features[indices], expected, atol=1e-5)
    assert torch.equal(model.bank.features[1:4], old[1:4])  # rows of other images untouched
    assert torch.allclose(model.bank.features.norm(dim=1), torch.ones(64), atol=1e-5)


def test_the_bank_starts_random_and_unit_or_empty_until_the_network_fills_it():
    random_start = _model("method.bank_init=random").bank
    assert random_start.filled.all() and torch.allclose(random_start.features.norm(dim=1), torch.ones(64), atol=1e-5)
    assert not _model("method.bank_init=network").bank.filled.any()  # fill_bank() runs as the first epoch starts


def test_bank_init_network_fills_the_bank_with_the_initial_networks_features(tmp_path):
    from contrastive.engine.run import fit, prepare_run
    from tests.conftest import FAST
    cfg = load_config(FAST + ["method=insdis", *SMALL_HEADS["insdis"], "method.bank_init=network", "dataset.num_train=32",
                              "dataset.num_val=16", "batch_size=16", "backbone.kwargs.width=4", "knn.enabled=false",
                              "trainer.max_steps=1", f"output_dir={tmp_path}"])
    ckpt = torch.load(fit(prepare_run(cfg))["last_checkpoint"], weights_only=True)["state_dict"]
    assert ckpt["bank.filled"].all()  # every image, not only the one step's 16


def test_an_unknown_bank_init_gets_one_line():
    with pytest.raises(ConfigError, match=r"method.bank_init='zeros' is unknown; valid choices: random, network"):
        _model("method.bank_init=zeros")


def test_the_images_own_entry_is_left_out_of_its_negatives():
    from contrastive.losses.self_supervised import info_nce_with_queue
    g = torch.Generator().manual_seed(0)
    q, k, bank = (F.normalize(torch.randn(*s, generator=g), dim=1) for s in ((2, 8), (2, 8), (3, 8)))
    exclude = torch.tensor([[False, True, False], [False, False, False]])  # row 0's own entry is negative 1
    t = 0.1
    expected = 0.0
    for b, kept in enumerate(([0, 2], [0, 1, 2])):
        pos = torch.exp(q[b] @ k[b] / t)
        expected += -torch.log(pos / (pos + sum(torch.exp(q[b] @ bank[j] / t) for j in kept))) / 2
    assert float(info_nce_with_queue(q, k, bank, t, exclude=exclude)) == pytest.approx(float(expected), rel=1e-5)
