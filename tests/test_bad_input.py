"""Bad input, tried systematically: command lines, configs, datasets,
checkpoints and output folders. Every case must end ``train.py`` with exit code 2 and one
``error:`` line naming the problem, before any training, without a traceback."""

import argparse
import logging
import pickle

import pytest
import torch

import train


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Two OpenMP threads on a shared 2-core machine spin against each other.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _jpeg(seed=0) -> bytes:
    import io

    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (24, 24, 3), dtype=torch.uint8, generator=g).numpy()  # [H, W, 3]
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG")
    return out.getvalue()


def _tree(root, files):
    """``files``: ``{"train/cat/a.jpg": bytes, ...}`` -> an image-folder tree under ``root``."""
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def _good(split, classes=("cat", "dog"), n=2):
    return {f"{split}/{c}/{i}.jpg": _jpeg(i + 10 * j) for j, c in enumerate(classes) for i in range(n)}


def _folder(files, **extra):
    def make(tmp):
        root = _tree(tmp / "images", files)
        return ["dataset=imagefolder", f"dataset.root={root}", "dataset.image_size=16", f"dataset.cache_dir={tmp / 'cache'}",
                "batch_size=2", *[f"{k}={v}" for k, v in extra.items()]]
    return make


def _ckpt(content):
    def make(tmp):
        path = tmp / "bad.ckpt"
        content(path)
        return [f"resume={path}"]
    return make


def _fixed(*overrides):
    return lambda tmp: list(overrides)


def _plugin(source):
    def make(tmp):
        path = tmp / "broken_plugin.py"
        path.write_text(source)
        return [f"plugins=[{path}]"]
    return make


def _plugin_yaml_only(tmp):
    (tmp / "cfgs" / "method").mkdir(parents=True)
    (tmp / "cfgs" / "method" / "yaml_only.yaml").write_text("# @package _global_\nmethod:\n  name: yaml_only\n")
    return ["method=yaml_only", f"hydra.searchpath=[file://{tmp / 'cfgs'}]"]


def _output_under_a_file(tmp):
    (tmp / "a_file").write_text("not a folder")
    return [f"output_dir={tmp / 'a_file' / 'outputs'}"]


TRUNCATED = _jpeg()[: len(_jpeg()) // 2]
CASES = [
    # ---- command line and config values
    ("unknown method", _fixed("method=nope"), "unknown method 'nope'; valid choices: barlowtwins, byol, "),
    ("unknown experiment (typo)", _fixed("experiment=simclr_cifar1O"), "unknown experiment 'simclr_cifar1O'; valid choices: "),
    ("plugin method without its module", _plugin_yaml_only, "unknown method 'yaml_only'; valid choices: barlowtwins, byol,"),
    ("unregistered backbone name", _fixed("backbone.name=no_such_net"), "unknown backbone 'no_such_net'; valid choices:"),
    ("unknown trainer option", _fixed("trainer.gradient_clip_vale=1.0"), "did you mean trainer.gradient_clip_val"),
    ("trainer option set by the framework", _fixed("trainer.callbacks=[]"), "trainer.callbacks cannot be set"),
    ("bad trainer option value", _fixed("trainer.gradient_clip_algorithm=sideways"), "invalid trainer option"),
    ("accelerator misspelled", _fixed("trainer.accelerator=gppu"), "trainer.accelerator='gppu' is not valid; choose one of"),
    ("zero devices", _fixed("trainer.devices=0"), "invalid trainer option trainer.devices=0: "),
    ("unknown strategy", _fixed("trainer.strategy=dpp"), "invalid trainer option trainer.strategy=dpp: "),
    ("unknown precision", _fixed("trainer.precision=17"), "invalid trainer option trainer.precision=17: "),
    ("data placement not a choice", _fixed("trainer.data_on_device=sometimes"),
     "trainer.data_on_device='sometimes' is not valid; choose one of auto, always, never"),
    ("lr scaling not a choice", _fixed("optimizer.lr_scaling=cubic"), "optimizer.lr_scaling='cubic' is not valid; choose one of linear, sqrt, none"),
    ("unknown logger", _fixed("logger=[csv,neptune]"), "logger 'neptune' is not valid; choose any of csv, tensorboard"),
    ("unknown dataset", _fixed("dataset=nope"), "unknown dataset 'nope'; valid choices:"),
    ("unknown backbone", _fixed("backbone=nope"), "unknown backbone 'nope'; valid choices:"),
    ("misspelled key", _fixed("method.temprature=0.2"), "unknown config key 'method.temprature'"),
    ("zero temperature", _fixed("method.temperature=0"), "method.temperature must be > 0"),
    ("batch of one", _fixed("batch_size=1"), "batch_size=1 is too small"),
    ("batch not a number", _fixed("batch_size=abc"), "batch_size='abc' is not valid: expected an integer"),
    ("bool not a bool", _fixed("trainer.progress_bar=maybe"), "trainer.progress_bar='maybe' is not valid: expected true or false"),
    ("batch larger than data", _fixed("dataset.num_train=64", "batch_size=128"), "batch_size=128 is larger than the training set (64 images)"),
    ("zero epochs", _fixed("trainer.max_epochs=0"), "max_epochs must be >= 1"),
    ("negative lr", _fixed("optimizer.lr=-1"), "optimizer.lr must be > 0"),
    ("negative warm-up", _fixed("scheduler.warmup_epochs=-1"), "scheduler.warmup_epochs must be >= 0"),
    ("image too small for backbone", _fixed("dataset.image_size=4"), "image_size"),
    ("knn k zero", _fixed("knn.k=0"), "knn needs k >= 1"),
    ("label fraction above 1", _fixed("dataset.label_fraction=1.5"), "label_fraction must be in (0, 1]"),
    ("nonfinite policy", _fixed("trainer.on_nonfinite=maybe"), "valid; choose one of error, skip, off"),
    ("shift fill not a choice", _fixed("method=imclr", "augment.shift_fill=reflect"),
     "augment.shift_fill must be one of zero, nearest, got 'reflect'"),
    ("jigsaw grid not dividing its crop", _fixed("method=pirl", "method.jigsaw.crop_size=32"),
     "method.jigsaw.crop_size=32 is not a multiple of method.jigsaw.grid=3: the jigsaw cuts the crop into 3x3 equal cells"),
    ("jigsaw patch larger than its cell", _fixed("method=pirl", "method.jigsaw.patch_size=11"),
     "method.jigsaw.patch_size=11 does not fit a grid cell of 10 pixels"),
    ("sync batchnorm on cpu", _fixed("trainer.sync_batchnorm=true", "trainer.accelerator=cpu"), "trainer.sync_batchnorm=true needs GPUs"),
    ("plugins not a list", _fixed("plugins=x.py"), "plugins='x.py' is not valid: expected a list, e.g. plugins=[x.py]"),
    ("plugin module missing", _fixed("plugins=[no_such_plugin_module]"), "cannot be imported"),
    ("plugin file missing", _fixed("plugins=[/nonexistent/plugin.py]"), "plugin file '/nonexistent/plugin.py' does not exist"),
    ("plugin with syntax error", _plugin("def broken(:\n"), "failed to import: SyntaxError"),
    # ---- datasets
    ("cifar10 not downloaded", _fixed("dataset=cifar10"), "not found at"),
    ("tinyimagenet missing", _fixed("dataset=tinyimagenet"), "not found at"),
    ("image folder missing", _fixed("dataset=imagefolder", "dataset.root=/nonexistent/images"), "dataset folder '/nonexistent/images/train' does not exist"),
    ("empty folder", _folder({"train/.keep": b"", "val/.keep": b""}), "holds no class sub-folders"),
    ("class folders without images", _folder({"train/cat/notes.txt": b"x", "val/cat/notes.txt": b"x"}), "holds no images with extensions"),
    ("truncated JPEG", _folder({**_good("train"), **_good("val"), "train/cat/cut.jpg": TRUNCATED}),
     "cut.jpg' (OSError: "),
    ("zero-byte image", _folder({**_good("train"), **_good("val"), "val/dog/empty.jpg": b""}), "cannot decode image"),
    ("text file named .png", _folder({**_good("train"), **_good("val"), "train/dog/readme.png": b"hello, not an image"}),
     "readme.png'"),
    ("mismatched class folders", _folder({**_good("train", ("cat", "dog")), **_good("val", ("cat", "cow"))}),
     "differ: cow, dog"),
    ("bad-image policy", _folder({**_good("train"), **_good("val")}, **{"dataset.on_bad_image": "sometimes"}),
     "dataset.on_bad_image='sometimes' is not valid; choose one of"),
    # ---- checkpoints
    ("checkpoint missing", _fixed("resume=/nonexistent/last.ckpt"), "does not exist"),
    ("checkpoint is a folder", lambda tmp: [f"resume={tmp}"], "is a folder, not a .ckpt file"),
    ("zero-byte checkpoint", _ckpt(lambda p: p.write_bytes(b"")), "is corrupt or not a checkpoint file"),
    ("truncated checkpoint", _ckpt(lambda p: (torch.save({"state_dict": {"w": torch.ones(1000)}}, p),
                                              p.write_bytes(p.read_bytes()[:300]))), "is corrupt or not a checkpoint file"),
    ("text file as checkpoint", _ckpt(lambda p: p.write_text("model weights: none")), "is corrupt or not a checkpoint file"),
    ("pickle that is not a checkpoint", _ckpt(lambda p: p.write_bytes(pickle.dumps(argparse.Namespace(lr=1)))),
     "is not a safe checkpoint file: it holds pickled Python objects"),
    ("torch file of pickled objects", _ckpt(lambda p: torch.save({"state_dict": argparse.Namespace(lr=1)}, p)),
     "is not a safe checkpoint file: it holds pickled Python objects"),
    ("weights but not ours", _ckpt(lambda p: torch.save({"state_dict": {"w": torch.ones(1)}}, p)), "is not a checkpoint written by contrastive"),
    ("another method's checkpoint", _ckpt(lambda p: torch.save({"state_dict": {}, "contrastive": {"method": "imclr"}}, p)),
     "trained with method 'imclr', not 'simclr'"),
    ("checkpoint of another width", _ckpt(lambda p: torch.save(
        {"state_dict": {"backbone.features.stem.0.0.weight": torch.zeros(2, 3, 3, 3)},
         "contrastive": {"method": "simclr", "config": {"backbone": {"name": "small_cnn"}}}}, p)), "does not fit this model"),
    # ---- output
    ("output folder not writable", _output_under_a_file, "cannot be written"),
]


@pytest.mark.parametrize("builder, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_error_line(tmp_path, builder, message, capsys):
    args = [f"output_dir={tmp_path / 'outputs'}", "dataset.root=/nonexistent", "trainer.max_epochs=4", "trainer.progress_bar=false"]
    case = builder(tmp_path)
    if not any(a.startswith("dataset=") for a in case):  # a small synthetic set: checks that need data come fast
        args += ["dataset.num_train=256", "dataset.num_val=64"]
    with pytest.raises(SystemExit) as exit_info:
        train.main(args + case)
    assert exit_info.value.code == 2
    # As a terminal shows it: the dataset decoding progress bar erases itself with "\r".
    err = "\n".join(line.rsplit("\r", 1)[-1] for line in capsys.readouterr().err.strip().split("\n"))
    assert err.startswith("error:") and message in err and "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    assert not list((tmp_path / "outputs").rglob("*.ckpt"))  # nothing trained


def test_table_covers_at_least_30_cases():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


def test_bad_images_skipped_are_counted_and_named_in_the_log(tmp_path, caplog):
    from contrastive.config.compose import load_config
    from contrastive.engine.run import prepare_run

    overrides = _folder({**_good("train"), **_good("val"), "train/cat/cut.jpg": TRUNCATED, "val/dog/empty.jpg": b""},
                        **{"dataset.on_bad_image": "skip"})(tmp_path)
    with caplog.at_level(logging.WARNING):
        run = prepare_run(load_config(overrides + [f"output_dir={tmp_path / 'out'}", "trainer.max_epochs=4"]))
    assert len(run.splits.train) == 4 and len(run.splits.val) == 4  # the good images
    assert sorted(p.rsplit("/", 1)[1] for p in run.splits.skipped_files) == ["cut.jpg", "empty.jpg"]
    warnings = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert any("skipped 1 unreadable image(s):" in w and "cut.jpg" in w for w in warnings), warnings
    assert any("skipped 1 unreadable image(s):" in w and "empty.jpg" in w for w in warnings), warnings


# ---------------------------------------------------------------- security
class _Payload:
    """Pickled, this runs ``marker.touch()`` on unpickling: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_malicious_checkpoint_is_refused_without_running_its_code(tmp_path):
    from contrastive.engine.checkpoint import load_checkpoint
    from contrastive.core.errors import CheckpointError

    marker, path = tmp_path / "pwned", tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "contrastive": {"method": "simclr"}, "x": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="not a safe checkpoint file.*refused without running them"):
        load_checkpoint(path)
    assert not marker.exists()


def _calls(tree, predicate):
    import ast

    return [node for node in ast.walk(tree) if isinstance(node, ast.Call) and predicate(node.func)]


def test_every_torch_load_uses_weights_only_and_nothing_evals_code():
    import ast

    from tests.conftest import ROOT

    files = [p for d in ("contrastive", "methods", "benchmarks") for p in (ROOT / d).rglob("*.py")]
    files += [ROOT / "train.py", ROOT / "linear_eval.py"]
    loads = 0
    for path in files:
        tree = ast.parse(path.read_text())
        for call in _calls(tree, lambda f: isinstance(f, ast.Attribute) and f.attr == "load"
                           and isinstance(f.value, ast.Name) and f.value.id == "torch"):
            loads += 1
            safe = [k for k in call.keywords if k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True]
            assert safe, f"{path.relative_to(ROOT)}:{call.lineno} calls torch.load without weights_only=True"
        evals = _calls(tree, lambda f: isinstance(f, ast.Name) and f.id in ("eval", "exec", "compile"))
        assert not evals, f"{path.relative_to(ROOT)}:{evals[0].lineno} calls {evals[0].func.id}()"
    assert loads >= 3  # the scan does find the loads (checkpoint, dataset cache, features)


def test_config_values_are_never_evaluated(tmp_path):
    from omegaconf import OmegaConf

    from contrastive.config.compose import load_config
    from contrastive.core.errors import ConfigError

    marker = tmp_path / "pwned"
    code = f"__import__('pathlib').Path('{marker}').touch()"
    cfg = load_config([f"run_name=\"{code}\""])
    assert cfg.run_name == code and not marker.exists()  # a string stays a string
    with pytest.raises(ConfigError, match="expected a number"):
        load_config([f"method.temperature=\"{code}\""])
    assert not OmegaConf.has_resolver("eval") and not marker.exists()


def test_plugins_are_imported_only_when_named(tmp_path, monkeypatch):
    import sys

    import contrastive.config.plugins as plugins
    from contrastive.config.compose import load_config
    from contrastive.engine.run import prepare_run

    loaded = []

    class FakeEntryPoint:
        def __init__(self, name):
            self.name, self.value = name, f"fake_pkg:{name}"

        def load(self):
            loaded.append(self.name)

    monkeypatch.setattr(plugins, "entry_points", lambda group: [FakeEntryPoint("simclr"), FakeEntryPoint("unrelated")])
    prepare_run(load_config([f"output_dir={tmp_path}", "dataset.num_train=64", "dataset.num_val=32", "batch_size=16"]))
    assert loaded == ["simclr"]  # the run's method names it; the other installed plugin is never imported
    assert "tests.plugins.simsiam_lite" not in sys.modules and "contrastive_plugin_simsiam_lite" not in sys.modules
