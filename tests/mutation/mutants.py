"""Named mutants: each breaks one feature on purpose, so its tests can be seen to fail.

A pytest plugin. With ``CONTRASTIVE_MUTANT=<name>`` in the environment and ``-p tests.mutation.mutants``
on the command line, the named mutant is applied (monkeypatched, nothing is written to a file) before
the tests are collected and undone when pytest ends; without the variable the plugin does nothing.
``tests/mutation/mutate.py`` runs every mutant against its own small test selection and reports which
ones the tests kill.

    CONTRASTIVE_MUTANT=resume_ignored python -m pytest -n 0 -p tests.mutation.mutants tests/test_train.py -k resume

A mutant is a function that takes a :class:`pytest.MonkeyPatch` and breaks its feature, registered
with :func:`mutant` under a name, the feature it breaks in words, and the tests that must then fail.
Forked processes (the two-process DDP tests) inherit it; processes started anew (``python train.py``
in a subprocess) do not.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Callable, Dict, Tuple

import pytest

ENV = "CONTRASTIVE_MUTANT"


@dataclass(frozen=True)
class Mutant:
    """One feature broken on purpose.

    Attributes:
        name: What ``CONTRASTIVE_MUTANT`` names.
        feature: The feature it breaks, in words.
        tests: The pytest arguments (files, node ids, ``-k`` expressions) of the tests that must fail.
        apply: Breaks the feature through the given monkeypatch.
    """

    name: str
    feature: str
    tests: Tuple[str, ...]
    apply: Callable[[pytest.MonkeyPatch], None]


MUTANTS: Dict[str, Mutant] = {}


def mutant(name: str, feature: str, *tests: str):
    """Register the decorated function as the mutant ``name`` (breaking ``feature``), killed by ``tests``."""

    def register(apply: Callable[[pytest.MonkeyPatch], None]):
        MUTANTS[name] = Mutant(name, feature, tests, apply)
        return apply

    return register


def replace_everywhere(patch: pytest.MonkeyPatch, module, attr: str, new) -> None:
    """Replace ``module.attr`` and every loaded module's global bound to the same object (the
    ``from module import attr`` copies); modules imported later import the replacement."""
    old = getattr(module, attr)
    for loaded in list(sys.modules.values()):
        if loaded is not None and getattr(loaded, "__dict__", {}).get(attr) is old:
            patch.setattr(loaded, attr, new)


# ---------------------------------------------------------------- the mutants
#: The quickest resume tests (every one fails under this mutant: tests/test_*.py -k resume).
RESUME_TESTS = ("tests/test_resume_baselines.py::test_a_crash_at_an_epoch_end_resumes_exactly[byol]",
                "tests/test_reliability.py::test_sigterm_mid_epoch_saves_and_resume_is_exact",
                "tests/test_legacy_format.py::test_a_legacy_checkpoint_resumes_where_it_stopped")


@mutant("resume_ignored", "Trainer.fit drops ckpt_path: a resumed run starts from scratch", *RESUME_TESTS)
def _resume_ignored(patch):
    import pytorch_lightning as pl

    fit = pl.Trainer.fit

    def fit_from_scratch(self, *args, ckpt_path=None, **kwargs):
        return fit(self, *args[:4], **kwargs)  # (model, train_dataloaders, val_dataloaders, datamodule)

    patch.setattr(pl.Trainer, "fit", fit_from_scratch)


@mutant("augment_rng_not_reseeded", "the augmentation RNG is not re-seeded per epoch and per step (resume is not exact)",
        "tests/test_reliability.py::test_sigterm_mid_epoch_saves_and_resume_is_exact")
def _augment_rng_not_reseeded(patch):
    from contrastive.engine.method import Method

    patch.setattr(Method, "on_train_epoch_start", lambda self: None)
    patch.setattr(Method, "on_before_batch_transfer", lambda self, batch, dataloader_idx: batch)


@mutant("insdis_own_entry_kept", "InsDis keeps an image's own bank entry among its drawn negatives (exclude=None)",
        "tests/test_insdis.py", "tests/test_methods.py::test_one_step_has_finite_loss_and_a_gradient_everywhere[insdis]")
def _insdis_own_entry_kept(patch):
    from contrastive.methods import insdis

    drawn_loss = insdis.info_nce_with_drawn_negatives

    def keep_own_entry(*args, exclude=None, **kwargs):
        return drawn_loss(*args, **kwargs)

    patch.setattr(insdis, "info_nce_with_drawn_negatives", keep_own_entry)


@mutant("transfer_refit_train_only", "linear transfer refits the selected head on train only, not train + validation",
        "tests/test_transfer_linear.py")
def _transfer_refit_train_only(patch):
    from contrastive.evaluation.transfer import linear

    def train_only(splits, num_classes, metric, grid, max_iter, warm_start):
        (tx, ty), (vx, vy) = splits["train"], splits["val"]
        scores, evals = linear.regularisation_path(tx, ty, vx, vy, num_classes, metric, grid, max_iter, warm_start)
        best = max(range(len(grid)), key=lambda i: (scores[i], grid[i]))
        head, _ = linear.fit_logistic_regression(tx, ty, num_classes, grid[best], max_iter)
        test_x, test_y = splits["test"]
        return linear.LinearTransferResult(l2=grid[best], val_score=scores[best], test_score=metric(linear.predict(head, test_x), test_y),
                                           val_scores=scores, evals=evals)

    replace_everywhere(patch, linear, "linear_transfer", train_only)


@mutant("momentum_update_skipped", "the momentum (EMA) copy is never updated", "tests/test_momentum.py")
def _momentum_update_skipped(patch):
    from contrastive.engine.momentum import MomentumCopy

    patch.setattr(MomentumCopy, "update", lambda self, online, tau: None)


@mutant("queue_never_enqueued", "the MoCo key queue is never written", "tests/test_baselines.py::test_queue_replaces_the_oldest_batch_wraps_and_resumes_exactly")
def _queue_never_enqueued(patch):
    from contrastive.memory.queue import KeyQueue

    patch.setattr(KeyQueue, "enqueue", lambda self, keys: None)


@mutant("kmeans_never_run", "k-means returns its initialisation (k seeded random points, each point to the nearest)",
        "tests/test_spcl.py::test_kmeans_assigns_every_index_deterministically_and_finds_blobs")
def _kmeans_never_run(patch):
    import torch

    from contrastive.clustering import kmeans as module

    def initialisation(features, k, niter=20, seed=0, max_points_per_centroid=None):
        x = torch.nn.functional.normalize(features.detach().float().cpu(), dim=1)  # [N, D]
        chosen = torch.randperm(len(x), generator=torch.Generator().manual_seed(int(seed)))[: int(k)]
        centroids = x[chosen]  # [k, D]
        return (x @ centroids.T).argmax(dim=1), centroids

    replace_everywhere(patch, module, "kmeans", initialisation)


@mutant("ddp_gather_skipped", "the all-gather helpers return this process's tensors only (queue keys, kNN features)",
        "tests/test_baselines.py::test_queue_under_two_process_ddp_holds_the_global_batch_in_rank_order",
        "tests/test_ddp.py::test_knn_monitor_gives_the_same_number_with_one_and_two_processes")
def _ddp_gather_skipped(patch):
    from contrastive.engine import method
    from contrastive.memory import queue

    replace_everywhere(patch, queue, "gather_keys", lambda keys: keys)
    replace_everywhere(patch, method, "gather_padded", lambda module, features, labels, indices: (features, labels, indices))


@mutant("nt_xent_temperature_ignored", "NT-Xent divides by 1 instead of its temperature", "tests/test_simclr.py", "-k", "nt_xent")
def _nt_xent_temperature_ignored(patch):
    from contrastive.losses import pairwise

    nt_xent = pairwise.nt_xent
    replace_everywhere(patch, pairwise, "nt_xent", lambda pos, neg, temperature, reduction="mean": nt_xent(pos, neg, 1.0, reduction))


@mutant("lars_trust_ratio_ignored", "clipped LARS takes the plain SGD step (its trust ratio always clipped to 1)",
        "tests/test_lars_clip.py")
def _lars_trust_ratio_ignored(patch):
    import torch

    from contrastive.engine.lars_clip import ClippedLARS

    patch.setattr(ClippedLARS, "local_rate", lambda self, trust, group: torch.ones_like(trust))


@mutant("lars_adaptation_skipped", "LARS takes the plain SGD step: no trust ratio and no decay for any layer",
        "tests/test_lars.py")
def _lars_adaptation_skipped(patch):
    from contrastive.engine.lars import LARS

    factors = LARS._factors
    patch.setattr(LARS, "_factors", lambda self, params, grads, group: (
        [d * 0 for d in factors(self, params, grads, group)[0]], [r * 0 + 1 for r in factors(self, params, grads, group)[1]]))


@mutant("host_sync_counter_blind", "the host-sync counter records nothing (every step would pass as sync-free)",
        "tests/test_host_syncs.py")
def _host_sync_counter_blind(patch):
    from contrastive.engine.host_syncs import HostSyncCounter

    patch.setattr(HostSyncCounter, "record", lambda self, kind, name: None)


@mutant("global_batch_per_process", "a preset's global_batch_size is taken as every process's batch (8x batch and lr on 8 GPUs)",
        "tests/test_scale.py::test_prepare_run_shares_the_global_batch_among_lightnings_processes")
def _global_batch_per_process(patch):
    from contrastive.config import batch

    replace_everywhere(patch, batch, "per_process_batch", lambda size, total, processes: size if total is None else total)


@mutant("stream_workers_from_env", "stream workers divide the cores by LOCAL_WORLD_SIZE, which Lightning's launcher does not set",
        "tests/test_scale.py::test_stream_workers_share_the_cores_among_lightnings_local_processes")
def _stream_workers_from_env(patch):
    from contrastive.data import stream

    workers = stream.default_workers
    replace_everywhere(patch, stream, "default_workers",
                       lambda configured, local: workers(configured, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


@mutant("ddp_unused_parameters_undeclared", "SPCL does not declare its heads unused before the first clustering (DDP fails)",
        "tests/test_scale.py::test_spcl_with_a_late_first_clustering_trains_under_ddp")
def _ddp_unused_parameters_undeclared(patch):
    from contrastive.methods.spcl import SPCL

    patch.setattr(SPCL, "has_unused_parameters", lambda self: False)


@mutant("loss_precision_off", "losses under autocast keep its bf16 matmuls (the float32 helper does nothing)",
        "tests/test_loss_precision.py")
def _loss_precision_off(patch):
    from contrastive.losses import precision

    patch.setattr(precision, "autocast_devices", lambda *values: set())


@mutant("prototype_pairs_any_partner", "SPCL's metric pairs take any sample as the positive partner, not another member of P_c",
        "tests/test_spcl.py", "-k", "prototype_pair")
def _prototype_pairs_any_partner(patch):
    import torch

    from contrastive.clustering import prototype_pairs as pairs_module

    original = pairs_module.prototype_pairs

    def any_partner(prototypes, anchor, generator=None):
        anchors, partners, labels, weights = original(prototypes, anchor, generator)
        b = prototypes.shape[0]
        shuffled = torch.randint(0, b, (b,), generator=generator, device=prototypes.device)
        return anchors, torch.cat([shuffled, partners[b:]]), labels, weights
    replace_everywhere(patch, pairs_module, "prototype_pairs", any_partner)


# ---------------------------------------------------------------- the plugin
_PATCH = pytest.MonkeyPatch()


def pytest_configure(config) -> None:
    name = os.environ.get(ENV)
    if not name:
        return
    if name not in MUTANTS:
        raise pytest.UsageError(f"{ENV}={name!r} is no mutant; valid choices: {', '.join(sorted(MUTANTS))}")
    MUTANTS[name].apply(_PATCH)


def pytest_report_header(config) -> str | None:
    name = os.environ.get(ENV)
    return f"mutant: {name} ({MUTANTS[name].feature})" if name in MUTANTS else None


def pytest_unconfigure(config) -> None:
    _PATCH.undo()
