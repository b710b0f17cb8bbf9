"""The wheel is self-contained: built, installed outside the repository, trains and evaluates."""

import os
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import ROOT

TINY = ["trainer.max_epochs=1", "dataset.num_train=256", "dataset.num_val=128", "batch_size=64",
        "backbone.kwargs.width=4", "knn.k=10", "trainer.progress_bar=false", "knn.random_init_baseline=false"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel of this checkout, installed (``--no-deps``) into a folder of its own."""
    tmp = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp / "dist"), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp / "dist").glob("contrastive-*.whl")
    site = tmp / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    work = tmp / "work"  # an empty folder outside the repository
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "HOME": str(tmp)}
    return wheel, site, work, env


@pytest.mark.slow
def test_wheel_holds_the_configs_and_methods_under_the_package_only(installed):
    wheel = installed[0]
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"contrastive"}
    assert {"contrastive/configs/train.yaml", "contrastive/configs/method/simclr.yaml",
            "contrastive/configs/experiment/none.yaml", "contrastive/methods/simclr.py"} <= set(names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "contrastive-train = contrastive.cli.train:train_console" in text and "contrastive-eval" in text


@pytest.mark.slow
def test_installed_console_scripts_train_and_evaluate_outside_the_repository(installed):
    _, site, work, env = installed
    where = subprocess.run([sys.executable, "-c", "import contrastive, importlib.util as u; "
                            "print(contrastive.__file__, u.find_spec('contrastive.methods').origin)"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=120)
    paths = where.stdout.split()  # the package and its methods, both from the installed wheel
    assert len(paths) == 2 and all(p.startswith(str(site)) for p in paths), where.stdout + where.stderr
    no_methods = subprocess.run([sys.executable, "-c", "import methods"], cwd=work, env=env, capture_output=True, text=True)
    assert no_methods.returncode != 0 and "No module named 'methods'" in no_methods.stderr
    train = subprocess.run([str(site / "bin" / "contrastive-train"), "method=simclr", *TINY], cwd=work, env=env,
                           capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stderr[-3000:]
    assert train.stdout.count("last checkpoint:") == 1 and train.stdout.count("headline kNN top-1 %") == 1, train.stdout
    (ckpt,) = (work / "outputs").glob("simclr-synthetic-small_cnn/*/checkpoints/last.ckpt")
    evaluate = subprocess.run([str(site / "bin" / "contrastive-eval"), f"checkpoint={ckpt}", "eval.mode=knn",
                               "eval.knn.k=10", "eval.progress_bar=false"], cwd=work, env=env,
                              capture_output=True, text=True, timeout=600)
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    assert "knn" in evaluate.stdout and "top-1 %" in evaluate.stdout
