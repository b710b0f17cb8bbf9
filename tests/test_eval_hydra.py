"""``linear_eval.py`` as a Hydra app: ``-m`` sweeps, Hydra's folders, one-line errors.

The checkpoints are untrained (a SimCLR model saved as ``train.py`` saves it), on 64 + 40 images.
"""

import json
import shutil

import pytest
import torch

import linear_eval
from contrastive.cli.hydra_app import decode_group_overrides, encode_group_overrides
from contrastive.config.compose import load_config
from contrastive.config.plugins import load_builtin_methods
from contrastive.core.errors import ConfigError
from contrastive.core.registry import METHODS
from contrastive.engine.method import DataInfo

EVAL = ["eval.mode=knn", "eval.knn.k=5", "eval.progress_bar=false"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval_hydra")
    load_builtin_methods()
    cfg = load_config(["backbone.kwargs.width=4", "dataset.num_train=64", "dataset.num_val=40",
                       "method.projection.hidden_dim=32", "method.projection.output_dim=16"])
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = METHODS.get("simclr")(cfg, DataInfo(10, 32, (0.5,) * 3, (0.25,) * 3, 64))
        ckpt = {"state_dict": model.state_dict()}
        model.on_save_checkpoint(ckpt)
        paths.append(folder / f"seed{seed}.ckpt")
        torch.save(ckpt, paths[-1])
    return paths


def test_run_group_overrides_survive_the_round_trip_through_hydra():
    given = ["dataset=cifar10", "dataset.root=/data", "+backbone.kwargs.drop_path_rate=0.1", "eval.mode=knn,linear"]
    encoded = encode_group_overrides(given, ("dataset", "backbone"), "run_overrides")
    assert encoded[:3] == ["++run_overrides.dataset=cifar10", "++run_overrides.dataset__root=/data",
                           "++run_overrides.add__backbone__kwargs__drop_path_rate=0.1"] and encoded[3] == given[3]
    assert decode_group_overrides(encoded, "run_overrides") == given
    with pytest.raises(ConfigError, match="'~dataset.root' is not valid here"):
        encode_group_overrides(["~dataset.root"], ("dataset", "backbone"), "run_overrides")


@pytest.mark.slow
def test_sweep_over_two_checkpoints_writes_both_results(checkpoints, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory
    a, b = checkpoints
    summaries = linear_eval.main(["-m", f"checkpoint={a},{b}", "dataset=synthetic", "dataset.num_train=64",
                                  "dataset.num_val=40", f"hydra.sweep.dir={tmp_path / 'sweep'}", *EVAL])
    assert [s["checkpoint"] for s in summaries] == [str(a), str(b)]
    for ckpt, summary in zip(checkpoints, summaries):
        saved = json.loads((ckpt.with_name(ckpt.stem + ".eval") / "knn-synthetic-labels1.json").read_text())
        assert saved["top1"] == summary["results"][0]["top1"] and summary["results"][0]["num_train"] == 64
    assert (tmp_path / "sweep" / "1" / ".hydra" / "overrides.yaml").is_file() and not (tmp_path / "outputs").exists()
    single = linear_eval.main([f"checkpoint={a}", *EVAL])  # a single run: Hydra's run folder is a's .eval/, no record
    assert single["results"][0]["top1"] == summaries[0]["results"][0]["top1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep"] and not (a.parent / "seed0.eval" / ".hydra").exists()


def test_bad_overrides_are_one_error_line_before_any_work(checkpoints, tmp_path, capsys):
    a = tmp_path / "a.ckpt"
    shutil.copy(checkpoints[0], a)
    cases = {
        ("-m", f"checkpoint={a},{tmp_path / 'missing.ckpt'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"): "does not exist",
        (f"checkpoint={a}", "eval.mode=knn,linear"): "is a sweep; add -m",
        (f"checkpoint={a}", "eval.mode=[knn"): "'eval.mode=[knn' is not a valid override",
        ("-m", f"checkpoint={a}", "eval.mode=probe,knn"): "eval.mode='probe' is not valid",
        (f"checkpoint={a}", "--foo"): "not '--foo'",
    }
    for argv, message in cases.items():
        with pytest.raises(SystemExit) as exc:
            linear_eval.main(list(argv))
        err = [line for line in capsys.readouterr().err.strip().splitlines() if " INFO " not in line]
        assert exc.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ckpt"]  # no sweep folder, no a.eval/


def test_cfg_job_prints_the_eval_config_with_the_run_overrides(capsys):
    assert linear_eval.main(["--cfg", "job", "eval.mode=knn", "dataset.root=/data"]) == {}
    printed = capsys.readouterr().out
    assert "mode: knn" in printed and "run_overrides:\n  dataset__root: /data" in printed
