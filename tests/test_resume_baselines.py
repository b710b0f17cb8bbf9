"""The baselines that carry state besides their weights resume exactly: 2 epochs straight equal 1 epoch,
a crash as epoch 1 starts, and ``resume=auto``, for every weight and every piece of that state (the
momentum encoder, the MoCo queue, DINO's centre, InsDis' memory bank, SwAV's prototypes, DeepCluster v2's
memory, centroids and assignments, PCL v2's prototypes). The resumed fit must start where the crash
checkpoint ends (a run that ignored the checkpoint would end with the same numbers: training is deterministic)."""

import pytest
import torch

from contrastive.config.compose import load_config
from tests.conftest import FAST, SMALL_HEADS, assert_started_from, fit_crashing_at_epoch_1

#: What each method keeps besides the backbone and heads, as state_dict key prefixes (each must be there).
STATE = {
    "byol": ("momentum.",),
    "mocov1": ("momentum.", "queue."),
    "mocov2": ("momentum.", "queue."),
    "mocov3": ("momentum.",),
    "dino": ("momentum.", "criterion."),
    "insdis": ("bank.",),
    "pirl": ("bank.",),
    "swav": ("prototypes.",),
    "deepclusterv2": ("memory.", "centroids", "assignments"),
    "pclv2": ("momentum.", "queue.", "assignments"),
    "pcl": ("momentum.", "queue.", "assignments"),
    "nnclr": ("support.",),
    "infomin": ("momentum.", "queue."),
    "selav2": ("memory.", "prototypes.", "assignments"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(STATE))
def test_a_crash_at_an_epoch_end_resumes_exactly(name, tmp_path, monkeypatch, fit_starts):
    from contrastive.engine.run import fit, prepare_run

    fast = [o for o in FAST if not o.startswith("scheduler.")]  # MoCo v1's step schedule has no warm-up key
    base = fast + [f"method={name}", *SMALL_HEADS[name], "dataset.num_train=64", "dataset.num_val=16", "batch_size=16",
                   "backbone.kwargs.width=4", "knn.enabled=false", f"output_dir={tmp_path}"]
    straight = torch.load(fit(prepare_run(load_config(base + ["run_name=straight"])))["last_checkpoint"],
                          weights_only=True)
    fit_crashing_at_epoch_1(base + ["run_name=resumed"], monkeypatch)
    interrupted = prepare_run(load_config(base + ["run_name=resumed", "resume=auto"]))
    crash = torch.load(interrupted.resume_from, weights_only=True)
    resumed = torch.load(fit(interrupted)["last_checkpoint"], weights_only=True)
    assert crash["global_step"] == 4
    assert_started_from(fit_starts[-1], crash)
    assert resumed["global_step"] == straight["global_step"] == 8
    assert resumed["state_dict"].keys() == straight["state_dict"].keys()
    for prefix in STATE[name]:
        assert any(k.startswith(prefix) for k in straight["state_dict"]), (name, prefix)
    for key, value in straight["state_dict"].items():
        assert torch.allclose(resumed["state_dict"][key].float(), value.float(), atol=1e-6), key
