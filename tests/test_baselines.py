"""The shared pieces of the baseline methods: their losses against the formulas written out,
the key queue (contents, wrap-around, checkpoint, DDP), multi-crop views, the schedules, and
the one-line errors for impossible settings."""

import math

import pytest
import torch
import torch.nn.functional as F
import yaml

from contrastive.augment.views import ViewAugments, build_view_augments
from contrastive.config.compose import load_config
from contrastive.core.errors import ConfigError
from contrastive.engine.schedules import cosine_ramp, linear_warmup
from contrastive.losses.self_supervised import batch_info_nce, info_nce_with_queue, negative_cosine, normalized_mse
from contrastive.memory.queue import KeyQueue

from contrastive.config.compose import CONFIG_DIR


def _unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_byol_and_simsiam_losses_match_their_formulas():
    p, z = torch.tensor([[3.0, 4.0], [1.0, 0.0]]), torch.tensor([[4.0, 3.0], [0.0, 2.0]])
    cos = torch.tensor([24.0 / 25.0, 0.0])  # (3*4 + 4*3) / (5 * 5), and orthogonal
    # BYOL Eq. 2: || p/|p| - z/|z| ||^2 = 2 - 2 cos
    direct = ((p / p.norm(dim=1, keepdim=True) - z / z.norm(dim=1, keepdim=True)) ** 2).sum(dim=1)
    assert torch.allclose(direct, 2 - 2 * cos)
    assert normalized_mse(p, z).item() == pytest.approx(float((2 - 2 * cos).mean()))
    assert negative_cosine(p, z).item() == pytest.approx(-float(cos.mean()))


def test_byol_output_batch_norm_standardises_every_projection_dimension_online_and_target():
    """``method.projection.output_batch_norm`` (the default run's): each projection dimension has mean 0
    and variance 1 over the batch, in the online projector and its momentum copy; the paper presets
    keep BYOL's head, whose last layer is the Linear ("the output of this MLP is not batch normalized")."""
    from contrastive.config.plugins import load_builtin_methods
    from contrastive.core.registry import METHODS
    from contrastive.engine.method import DataInfo

    load_builtin_methods()
    data = DataInfo(num_classes=10, image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3, num_train=64)
    small = ["backbone.kwargs.width=4", "method.projection.hidden_dim=32", "method.projection.output_dim=16",
             "method.predictor.hidden_dim=16"]
    model = METHODS.get("byol")(load_config(["method=byol", *small]), data).train()
    features = torch.randn(32, model.backbone.feature_dim, generator=torch.Generator().manual_seed(0))  # [B, D]
    for projector in (model.projection_head, model.momentum[1]):
        z = projector(features)  # [B, 16]
        assert torch.allclose(z.mean(0), torch.zeros(16), atol=1e-5)
        assert torch.allclose(z.var(0, unbiased=False), torch.ones(16), atol=1e-3)
    for preset in ("byol_cifar10", "byol_imagenet"):
        cfg = load_config([f"experiment={preset}", *small, "backbone=small_cnn", "dataset=synthetic"])
        assert cfg.method.projection.output_batch_norm is False
        last = list(METHODS.get("byol")(cfg, data).projection_head.modules())[-1]
        assert isinstance(last, torch.nn.Linear), preset


def test_moco_infonce_with_a_queue_matches_its_formula():
    q, k, queue, t = _unit(4, 8, seed=1), _unit(4, 8, seed=2), _unit(6, 8, seed=3), 0.2
    expected = 0.0
    for i in range(4):
        pos = math.exp(float(q[i] @ k[i]) / t)
        neg = sum(math.exp(float(q[i] @ queue[j]) / t) for j in range(6))
        expected += -math.log(pos / (pos + neg)) / 4
    assert info_nce_with_queue(q, k, queue, t).item() == pytest.approx(expected, rel=1e-5)


def test_moco_v3_batch_infonce_matches_its_formula_with_an_offset():
    # T 0.2 (the default run's), not 1.0: at T = 1 the /T and the 2T factor would both be invisible
    q, keys, t = _unit(2, 4, seed=4), _unit(6, 4, seed=5), 0.2
    expected = 0.0
    for i in range(2):  # this process is rank 1 of 3: its positives are keys 2 and 3
        logits = [float(q[i] @ keys[j]) / t for j in range(6)]
        expected += -(logits[2 + i] - math.log(sum(math.exp(v) for v in logits))) / 2
    assert batch_info_nce(q, keys, t, offset=2).item() == pytest.approx(2 * t * expected, rel=1e-5)


def test_queue_replaces_the_oldest_batch_wraps_and_resumes_exactly():
    queue = KeyQueue(6, 2, seed=0)
    first = queue.keys.clone()
    a, b = torch.ones(2, 2), torch.full((2, 2), 2.0)
    queue.enqueue(a)
    assert torch.equal(queue.keys[:2], a) and torch.equal(queue.keys[2:], first[2:])
    queue.enqueue(b)
    queue.enqueue(a * 3)
    queue.enqueue(b * 5)  # wraps: overwrites the oldest (rows 0-1)
    assert torch.equal(queue.keys[0:2], b * 5) and torch.equal(queue.keys[2:4], b) and int(queue.pointer) == 2
    resumed = KeyQueue(6, 2, seed=1)
    resumed.load_state_dict(queue.state_dict())
    assert torch.equal(resumed.keys, queue.keys) and resumed._pointer == 2
    resumed.enqueue(a)
    assert torch.equal(resumed.keys[2:4], a)


def test_queue_size_must_be_a_multiple_of_the_global_batch():
    with pytest.raises(ConfigError, match="queue size 5 is not a multiple of the global batch 2"):
        KeyQueue(5, 3).enqueue(torch.ones(2, 3))
    from contrastive.engine.method import DataInfo
    from contrastive.core.registry import METHODS
    from contrastive.config.plugins import load_builtin_methods

    load_builtin_methods()
    cfg = load_config(["method=mocov2", "batch_size=48", "method.queue_size=100"])
    data = DataInfo(num_classes=10, image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3, num_train=64)
    with pytest.raises(ConfigError, match=r"method.queue_size=100 must be a positive multiple of the global batch"):
        METHODS.get("mocov2").validate_config(cfg, data)
    cfg = load_config(["method=byol", "method.momentum.base=1.5"])
    with pytest.raises(ConfigError, match=r"method.momentum.base=1.5 is outside \[0, 1\]"):
        METHODS.get("byol").validate_config(cfg, data)


def _augment_cfg(**overrides):
    cfg = yaml.safe_load((CONFIG_DIR / "augment" / "simclr.yaml").read_text())
    cfg["multicrop"].update(overrides)
    return cfg


def test_multicrop_gives_two_global_then_local_views_at_their_size():
    aug = build_view_augments(_augment_cfg(num_local=3, size=12), 32, (0.5,) * 3, (0.25,) * 3)
    assert isinstance(aug, ViewAugments) and len(aug) == 5 and aug.num_local == 3
    images = torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8)
    assert [tuple(aug.view(v)(images).shape) for v in range(5)] == [(4, 3, 32, 32)] * 2 + [(4, 3, 12, 12)] * 3
    assert aug.view(2).scale == (0.05, 0.14) and aug.view(0).scale == (0.08, 1.0)


def test_asymmetric_views_take_their_own_settings():
    cfg = yaml.safe_load((CONFIG_DIR / "augment" / "simclr.yaml").read_text())
    cfg["per_view"] = [{"blur_prob": 1.0}, {"blur_prob": 0.1, "solarize_prob": 0.2}]
    aug = build_view_augments(cfg, 32, (0.5,) * 3, (0.25,) * 3)
    assert (aug.view(0).blur_prob, aug.view(0).solarize_prob) == (1.0, 0.0)
    assert (aug.view(1).blur_prob, aug.view(1).solarize_prob) == (0.1, 0.2)


def test_bad_multicrop_settings_get_one_line():
    with pytest.raises(ConfigError, match="augment.multicrop.size=48 must be between 8 and the image size 32"):
        build_view_augments(_augment_cfg(num_local=2, size=48), 32, (0.5,) * 3, (0.25,) * 3)
    from contrastive.engine.method import DataInfo
    from contrastive.core.registry import METHODS
    from contrastive.config.plugins import load_builtin_methods

    load_builtin_methods()
    cfg = load_config(["method=simclr", "augment.multicrop.num_local=2"])
    data = DataInfo(num_classes=10, image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3, num_train=64)
    with pytest.raises(ConfigError, match="method 'simclr' cannot use local crops"):
        METHODS.get("simclr")(cfg, data)


def test_dino_schedules_against_hand_computed_values():
    assert linear_warmup(0, 30, 0.04, 0.07) == pytest.approx(0.04)
    assert linear_warmup(15, 30, 0.04, 0.07) == pytest.approx(0.055)
    assert linear_warmup(30, 30, 0.04, 0.07) == pytest.approx(0.07) and linear_warmup(3, 0, 0.04, 0.07) == 0.07
    assert cosine_ramp(0, 100, 0.04, 0.4) == pytest.approx(0.04)
    assert cosine_ramp(50, 100, 0.04, 0.4) == pytest.approx(0.22)
    assert cosine_ramp(25, 100, 0.04, 0.4) == pytest.approx(0.4 - 0.36 * (math.cos(math.pi / 4) + 1) / 2)
    assert cosine_ramp(100, 100, 0.04, 0.4) == pytest.approx(0.4)


def _enqueue_on_rank(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        queue = KeyQueue(8, 2, seed=0)
        queue.enqueue(torch.full((2, 2), float(rank + 1)))  # rank 0 writes 1s, rank 1 writes 2s
        torch.save({"keys": queue.keys, "pointer": queue._pointer}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_queue_under_two_process_ddp_holds_the_global_batch_in_rank_order(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # fork, not spawn: the processes inherit the test process's code as it is (a mutant of tests/mutation too)
    mp.start_processes(_enqueue_on_rank, args=(2, port, str(tmp_path)), nprocs=2, join=True, start_method="fork")
    saved = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    expected = torch.cat([torch.ones(2, 2), torch.full((2, 2), 2.0)])  # one write of the global batch of 4
    for s in saved:
        assert torch.equal(s["keys"][:4], expected) and s["pointer"] == 4
    assert torch.equal(saved[0]["keys"], saved[1]["keys"])  # identical copies, no broadcast needed
