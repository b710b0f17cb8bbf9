"""Configuration: one composition per job, defaults only in YAML, method values tuned for one
optimizer, the schemas, what Lightning rejects, import-time cost and what ``auto`` chose."""

import ast
import json
import re
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

import linear_eval
import train
from contrastive.config.compose import config_dir, load_config
from contrastive.core.errors import ConfigError
from tests.conftest import FAST, ROOT

SMALL = FAST + ["trainer.max_epochs=1", "knn.random_init_baseline=false", "dataset.num_train=256", "dataset.num_val=64",
                "backbone.kwargs.width=4"]


@pytest.fixture
def compositions(monkeypatch):
    """The configs this package composes (Hydra's compose API, which load_config calls)."""
    import hydra

    calls = []
    original = hydra.compose

    def counted(config_name=None, overrides=(), **kwargs):
        calls.append(list(overrides))
        return original(config_name, overrides=overrides, **kwargs)

    monkeypatch.setattr(hydra, "compose", counted)
    return calls


@pytest.mark.parametrize("overrides, error", [
    (["method=spcl", "method.temperature=0.3", "trainer.gradient_clip_val=1.0"], None),
    (["batch_size=abc"], "batch_size='abc' is not valid: expected an integer"),
    (["method.temprature=0.2"], "did you mean method.temperature"),
    (["trainer.max_epochs=abc"], "trainer.max_epochs='abc' is not valid: expected an integer"),
])
def test_load_config_composes_each_job_once(compositions, overrides, error):
    """The type check and the key suggestions read the defaults from the same composition."""
    if error is None:
        assert load_config(overrides).method.temperature == 0.3
    else:
        with pytest.raises(ConfigError, match=re.escape(error)):
            load_config(overrides)
    assert len(compositions) == 1


def test_without_the_hydra_hook_the_values_are_still_checked(compositions, monkeypatch):
    """A Hydra without the hooked loader step costs one more composition, never a skipped check."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    apply = ConfigLoaderImpl.__dict__["_apply_overrides_to_config"].__func__
    monkeypatch.setattr(ConfigLoaderImpl, "_apply_overrides_to_config", lambda overrides, cfg: apply(overrides, cfg))
    with pytest.raises(ConfigError, match=re.escape("batch_size='abc' is not valid: expected an integer")):
        load_config(["batch_size=abc"])
    assert len(compositions) == 2


@pytest.mark.slow
def test_the_command_lines_compose_each_job_once(compositions, tmp_path, capsys):
    linear_eval.main(["--cfg", "eval.mode=knn"])
    assert len(compositions) == 1 and "mode: knn" in capsys.readouterr().out
    compositions.clear()
    train.main(["-m", *SMALL, f"output_dir={tmp_path}", "knn.enabled=false", "method.temperature=0.2,0.5",
                f"hydra.sweep.dir={tmp_path}/sweep"])
    # One check per job before Hydra starts; the job Hydra composes (in its app) is not composed again here.
    assert [c for c in compositions if "method.temperature=0.2" in c] == compositions[:1] and len(compositions) == 2


def test_composed_config_is_plain_and_keeps_its_choices_as_strings():
    cfg = load_config(["trainer.on_nonfinite=skip", "optimizer.lr_scaling=sqrt"])
    assert type(cfg.trainer.on_nonfinite) is str and cfg.optimizer.lr_scaling == "sqrt"
    container = OmegaConf.to_container(cfg)  # what checkpoints store: plain values only
    assert container["trainer"]["data_on_device"] == "auto" and OmegaConf.get_type(cfg.trainer) is dict
    with pytest.raises(Exception):
        cfg.trainer.bogus = 1  # struct mode


@pytest.mark.parametrize("override, message", [
    ("trainer.data_on_device=sometimes", "trainer.data_on_device='sometimes' is not valid; choose one of auto, always, never"),
    ("optimizer.lr_scaling=cubic", "optimizer.lr_scaling='cubic' is not valid; choose one of linear, sqrt, none"),
    ("trainer.on_nonfinite=skpi", "choose one of error, skip, off; did you mean skip?"),
    ("scheduler.warmup_epochs=x", "scheduler.warmup_epochs='x' is not valid: expected an integer"),
    ("trainer.compile=maybe", "trainer.compile='maybe' is not valid: expected true or false"),
])
def test_schema_rejects_bad_types_and_choices_in_one_line(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        load_config([override])
    assert "\n" not in str(err.value)


# ------------------------------------------------------------- values tuned for one optimizer
def test_method_values_tuned_for_lars_apply_only_with_lars():
    tuned = load_config(["method=simclr"]).optimizer
    assert (tuned.name, tuned.lr, tuned.lr_scaling, tuned.weight_decay) == ("lars", 0.15, "sqrt", 1e-6)
    sgd = load_config(["method=simclr", "optimizer=sgd"]).optimizer
    plain_sgd = OmegaConf.load(config_dir() / "optimizer" / "sgd.yaml")
    assert (sgd.name, sgd.lr, sgd.lr_scaling, sgd.weight_decay) == ("sgd", plain_sgd.lr, plain_sgd.lr_scaling, plain_sgd.weight_decay)
    assert load_config(["method=simclr", "optimizer=sgd", "optimizer.lr=0.2"]).optimizer.lr == 0.2
    # A schedule tuned for step decay is not merged into another schedule.
    assert "milestones" in load_config(["method=imclr"]).scheduler
    assert "milestones" not in load_config(["method=imclr", "scheduler=warmup_cosine"]).scheduler


@pytest.mark.parametrize("group, other", [("method_optimizer", "optimizer"), ("method_scheduler", "scheduler")])
def test_every_tuned_file_names_a_method_and_an_option(group, other):
    """``optional method_optimizer: ${method}_${optimizer}`` skips a misnamed file silently: check the names."""
    methods = {p.stem for p in (config_dir() / "method").glob("*.yaml")}
    options = {p.stem for p in (config_dir() / other).glob("*.yaml")}
    files = sorted((config_dir() / group).glob("*.yaml"))
    assert files
    for path in files:
        assert any(path.stem == f"{m}_{o}" for m in methods for o in options), f"{group}/{path.name}: no method_{other} pair"
        method = next(m for m in methods if path.stem.startswith(m + "_"))
        chosen = load_config([f"method={method}"])[other].name  # the method's own choice is the tuned one
        assert path.stem == f"{method}_{chosen}", f"{group}/{path.name}: method={method} chooses {other}={chosen}"


# ------------------------------------------------------------- what Lightning rejects
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_gpu_accelerator_without_a_gpu_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main([f"output_dir={tmp_path}", "trainer.accelerator=gpu"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2
    assert err == "error: trainer.accelerator=gpu: no GPU is available on this machine; use trainer.accelerator=auto or cpu"


def test_lightning_rejections_name_the_key():
    from contrastive.engine.trainer import lightning_trainer

    with pytest.raises(ConfigError, match=r"trainer.accelerator='gppu' is not valid; choose one of .*did you mean gpu\?"):
        lightning_trainer({"accelerator": "gppu"})
    with pytest.raises(ConfigError, match=r"invalid trainer option trainer.strategy=bogus: "):
        lightning_trainer({"accelerator": "cpu", "strategy": "bogus", "logger": False})
    with pytest.raises(ConfigError, match=r"invalid trainer option trainer.num_nodes=0: "):
        lightning_trainer({"accelerator": "cpu", "num_nodes": 0, "logger": False})


# ------------------------------------------------------------- import time
@pytest.mark.slow
def test_import_contrastive_loads_no_framework_and_sets_no_warning_filter():
    code = ("import warnings; before = list(warnings.filters); import contrastive, contrastive.config.compose, "
            "contrastive.cli.train, contrastive.cli.eval, sys; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'hydra', 'lightning', 'pytorch_lightning'))); "
            "print(warnings.filters == before)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout.split("\n")
    assert out[0] == "[]" and out[1] == "True", out
    # No module of the package sets a warning filter when imported: the engine's are set inside fit().
    at_import = []
    for path in [*(ROOT / "contrastive").rglob("*.py"), *(ROOT / "methods").glob("*.py")]:
        tree = ast.parse(path.read_text())
        outside_functions = [n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        for node in (sub for top in outside_functions for sub in ast.walk(top)):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("filterwarnings", "simplefilter"):
                at_import.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert at_import == []


def test_config_dir_is_resolved_on_first_use_and_the_old_name_still_works():
    import contrastive.config.compose as compose

    assert "CONFIG_DIR" not in vars(compose)
    assert compose.CONFIG_DIR == config_dir() and (config_dir() / "train.yaml").is_file()


# ------------------------------------------------------------- what auto chose
@pytest.mark.slow
def test_env_json_and_first_log_lines_say_what_auto_chose(tmp_path):
    summary = train.main([*SMALL, f"output_dir={tmp_path}", "trainer.precision=auto", "knn.enabled=false"])
    run_dir = summary["run_dir"]
    auto = json.loads(open(f"{run_dir}/env.json").read())["auto"]
    assert auto["trainer.precision"] == {"requested": "auto", "chosen": "32-true"}  # conftest: CONTRASTIVE_CPU_BF16=0
    assert auto["trainer.channels_last"]["requested"] == "auto" and isinstance(auto["trainer.channels_last"]["chosen"], bool)
    assert auto["dataset.decoder"]["chosen"] in ("torchcodec", "torchvision", "pil")
    assert auto["dataset.storage"]["chosen"] == "memory" and auto["trainer.data_on_device"]["chosen"] is False
    assert auto["device"] == "cpu" and {"cpu_capability", "cpu_bf16_flags", "cpu_native_bf16"} <= set(auto["facts"])
    lines = open(f"{run_dir}/train.log").read().splitlines()
    assert any("auto settings: trainer.precision=auto -> 32-true" in line for line in lines[:3]), lines[:3]
    assert "precision: auto" in open(f"{run_dir}/config.yaml").read()  # the config keeps what was asked


# ------------------------------------------------------------- defaults only in YAML
#: ``x.get("key", default)`` / ``getattr(x, "key", default)`` reads that are not config values:
#: (file, receiver) -> why.
NOT_CONFIG_VALUES: dict = {}


def _config_names(scope: ast.AST) -> set:
    """Names in ``scope`` that hold a config: parameters called *cfg* or typed DictConfig, and
    names bound to a part of one (``t = cfg.trainer``, ``m = self.cfg.method``)."""
    names = set()
    if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
        for arg in scope.args.args + scope.args.kwonlyargs:
            if "cfg" in arg.arg or (arg.annotation is not None and "DictConfig" in ast.unparse(arg.annotation)):
                names.add(arg.arg)
        body = list(ast.walk(scope))
    else:
        body = list(scope.body)  # module level: its own statements only
    for node in body:
        if isinstance(node, ast.Assign) and _is_config(node.value, names):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def _is_config(node: ast.AST, names: set) -> bool:
    """``node`` is a config or a part of one: an attribute/item chain from a config name (``x or {}`` too)."""
    if isinstance(node, ast.BoolOp):
        return any(_is_config(v, names) for v in node.values)
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        if isinstance(node, ast.Attribute) and "cfg" in node.attr:
            return True
        node = node.value
    return isinstance(node, ast.Name) and ("cfg" in node.id or node.id in names)


def _default_reads(path):
    """``(line, receiver, call)`` of every default-taking read of a config value in ``path``."""
    tree = ast.parse(path.read_text())
    scopes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    found = set()
    for scope in scopes:
        names = _config_names(scope)
        for call in ast.walk(scope):
            if not isinstance(call, ast.Call):
                continue
            f = call.func
            if isinstance(f, ast.Attribute) and f.attr == "select" and any(k.arg == "default" for k in call.keywords):
                found.add((call.lineno, ast.unparse(f.value), ast.unparse(call)))
            receiver = None
            if isinstance(f, ast.Attribute) and f.attr == "get" and call.args and isinstance(call.args[0], ast.Constant):
                receiver = f.value
            elif isinstance(f, ast.Name) and f.id == "getattr" and len(call.args) == 3:
                receiver = call.args[0]
            if receiver is not None and _is_config(receiver, names):
                found.add((call.lineno, ast.unparse(receiver), ast.unparse(call)))
    return sorted(found)


def test_no_code_default_for_a_config_value():
    """Every default is in the YAML, with its comment; code reads ``cfg.key``, never ``cfg.get(key, default)``."""
    files = sorted([*(ROOT / "contrastive").rglob("*.py"), *(ROOT / "methods").glob("*.py")])
    problems = []
    for path in files:
        rel = str(path.relative_to(ROOT))
        for line, receiver, call in _default_reads(path):
            if (rel, receiver) not in NOT_CONFIG_VALUES:
                problems.append(f"{rel}:{line}: {call}")
    assert not problems, "config values read with a code default (declare the key in the YAML instead):\n" + "\n".join(problems)


def test_the_scan_finds_default_reads(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "def f(cfg, other, self):\n"
        "    t = cfg.trainer\n"
        "    a = t.get('max_steps', -1)\n"
        "    b = getattr(self.cfg.method, 'num_views', 2)\n"
        "    c = other.get('x', 1)\n"
        "    d = OmegaConf.select(other, 'y', default=0)\n"
        "    summary = build(cfg)\n"
        "    return a, b, c, d, summary.get('z')\n")
    reads = [call for _, _, call in _default_reads(sample)]
    assert reads == ["t.get('max_steps', -1)", "getattr(self.cfg.method, 'num_views', 2)",
                     "OmegaConf.select(other, 'y', default=0)"]
