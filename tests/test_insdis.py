"""InsDis: the loss through the method's own training step against its formula (per-sample drawn negatives,
the image's own entry left out), the memory-bank refresh (one momentum step, re-normalised) and the bank's two
starts (random unit vectors, or one pass of the initial network)."""

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
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
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


def test_the_bank_starts_as_unit_random_vectors_or_empty_until_the_network_fills_it():
    random_start = _model("method.bank_init=random").bank
    assert random_start.filled.all() and torch.allclose(random_start.features.norm(dim=1), torch.ones(64), atol=1e-5)
    rows = random_start.features  # [64, 128] unit vectors in random directions: distinct, no shared direction
    assert (rows @ rows.t() - torch.eye(64)).abs().max() < 0.6 and rows.mean(0).norm() < 0.3
    assert not _model("method.bank_init=network").bank.filled.any()  # fill_bank() runs as the first epoch starts


def test_bank_init_network_fills_the_bank_with_the_initial_networks_normalised_features(tmp_path, monkeypatch):
    from contrastive.engine.run import fit, prepare_run
    from tests.conftest import FAST
    cls, seen = METHODS.get("insdis"), {}
    original = cls.fill_bank

    def recorded_fill_bank(self):
        images = self.trainer.datamodule.splits.train.images
        torch.manual_seed(123)
        original(self)
        seen["bank"] = self.bank.features.clone()
        torch.manual_seed(123)  # the same augmentation draw, written out: one training view, eval mode, no grad
        self.eval()
        with torch.no_grad():
            seen["expected"] = F.normalize(self.project(self.augment(images.to(self.device))).float(), dim=1)
        self.train()

    monkeypatch.setattr(cls, "fill_bank", recorded_fill_bank)
    cfg = load_config(FAST + ["method=insdis", *SMALL_HEADS["insdis"], "method.bank_init=network", "dataset.num_train=32",
                              "dataset.num_val=16", "batch_size=16", "backbone.kwargs.width=4", "knn.enabled=false",
                              "trainer.max_steps=1", f"output_dir={tmp_path}"])
    ckpt = torch.load(fit(prepare_run(cfg))["last_checkpoint"], weights_only=True)["state_dict"]
    assert ckpt["bank.filled"].all()  # every image, not only the one step's 16
    assert seen["bank"].shape == (32, 128)
    assert torch.allclose(seen["bank"], seen["expected"], atol=1e-5)


def test_an_unknown_bank_init_gets_one_line():
    with pytest.raises(ConfigError, match=r"method.bank_init='zeros' is unknown; valid choices: random, network"):
        _model("method.bank_init=zeros")


def _formula(f, bank, indices, drawn, t, leave_out_own=True):
    """Eq. 2 over the drawn set, written out: -log exp(f.v_i/t) / (exp(f.v_i/t) + sum_j exp(f.v_j/t)), the sum over
    row b's own drawn entries j (its own image's entry left out), averaged over the batch."""
    total = 0.0
    for b in range(len(indices)):
        pos = torch.exp(f[b] @ bank[indices[b]] / t)
        neg = sum(torch.exp(f[b] @ bank[j] / t) for j in drawn[b].tolist() if not (leave_out_own and j == indices[b]))
        total += float(-torch.log(pos / (pos + neg)))
    return total / len(indices)


def _step(model, indices):
    images = torch.randint(0, 256, (len(indices), 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    views, labels = model.make_views(images, torch.zeros(len(indices), dtype=torch.long))
    bank = model.bank.features.clone()  # [N, d] before the step's refresh
    loss = model.training_losses(views, labels, indices)["loss"]
    loss.backward()  # after the step's in-place bank refresh: the graph holds its own copy of the bank
    loss = float(loss.detach())
    with torch.no_grad():
        f = model.project(views[0])  # [B, d] (train mode: the same batch statistics as the step)
    return loss, f, bank


def test_the_images_own_entry_is_left_out_of_its_negatives_in_the_training_step(monkeypatch):
    """A draw forced to hold every image's own index (column 0): the step's loss is the formula without it."""
    model = _model("method.bank_init=random")
    indices = torch.arange(16) * 4  # [B]
    drawn = (indices.unsqueeze(1) + 3 * torch.arange(32)) % 64  # [B, m]: column 0 is the own index, no other repeat
    monkeypatch.setattr(model, "draw_negatives", lambda batch_size, device: drawn)
    loss, f, bank = _step(model, indices)
    t = float(model.cfg.method.temperature)
    assert loss == pytest.approx(_formula(f, bank, indices, drawn, t), rel=1e-5)
    assert loss != pytest.approx(_formula(f, bank, indices, drawn, t, leave_out_own=False), rel=1e-3)


def test_every_sample_draws_its_own_negatives_seeded_by_the_step():
    """The method's own seeded draw, per sample (rows differ), with own indices among it on this 64-image set."""
    model = _model("method.bank_init=random")
    indices = torch.arange(16) * 4
    drawn = model.draw_negatives(16, torch.device("cpu"))  # [B, m]
    assert drawn.shape == (16, 32) and not torch.equal(drawn[0], drawn[1])
    assert torch.equal(drawn, model.draw_negatives(16, torch.device("cpu")))  # a function of (seed, step): resumable
    assert (drawn == indices.unsqueeze(1)).any()
    loss, f, bank = _step(model, indices)
    assert loss == pytest.approx(_formula(f, bank, indices, drawn, float(model.cfg.method.temperature)), rel=1e-5)


def test_each_process_takes_its_rows_of_the_global_batchs_draw(monkeypatch):
    model = _model()
    whole = model.draw_negatives(16, torch.device("cpu"))  # one process, global batch 16
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    assert torch.equal(model.draw_negatives(8, torch.device("cpu")), whole[8:])


def test_drawn_similarities_are_the_same_through_either_way_of_computing_them():
    from contrastive.losses.self_supervised import drawn_similarities
    g = torch.Generator().manual_seed(0)
    q, bank = torch.randn(3, 4, generator=g), torch.randn(50, 4, generator=g)
    drawn = torch.randint(0, 50, (3, 20), generator=g)  # 50 x (3 + 4) <= 3 x 20 x 4: all scores, then gathered
    expected = torch.stack([torch.stack([q[b] @ bank[j] for j in drawn[b]]) for b in range(3)])
    assert torch.allclose(drawn_similarities(q, bank, drawn), expected, atol=1e-6)
    assert torch.allclose(drawn_similarities(q, bank, drawn[:, :2]), expected[:, :2], atol=1e-6)  # the rows gathered
