"""Any dataset through the whole smoke pipeline: a 3-class, 48x48 ImageFolder tree the test writes, run by the same
notebooks and the smoke profile with only its dataset-specific lines changed (issue 7, point 4)."""
import json, os, subprocess, sys
from pathlib import Path
import pandas as pd
import pytest, torch
from metacompress.core import STEPS
from metacompress.testing import write_tiny_tree

ROOT = Path(__file__).resolve().parents[1]

def _profile(tree: Path) -> str:
    "The smoke profile, pointed at the tree: 48x48 images, 3 classes, split sizes that fit, LeNet left out (fixed 32x32)."
    s = (ROOT / "nbs" / "profiles" / "smoke.yaml").read_text()
    for old, new in [("  dataset: cifar10 ", "  dataset: tiny3 "), ("  source: env:METACOMPRESS_CIFAR10", f"  source: {tree}"),
                     ("  image_size: 32", "  image_size: 48"), ("  n_train: 1000", "  n_train: 90"), ("  n_ideal: 200", "  n_ideal: 30"),
                     ("  n_test: 500", "  n_test: 60"), ("  pretrained: [resnet20_akamaster, lenet_captum]", "  pretrained: [resnet20_akamaster]"),
                     ("  source_n: 20 ", "  source_n: 6 ")]:
        assert old in s, f"smoke.yaml changed: update this test ({old!r})"
        s = s.replace(old, new, 1)
    return s

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    if not os.environ.get("METACOMPRESS_WEIGHTS"): pytest.skip("METACOMPRESS_WEIGHTS is not set: the smoke zoo needs the pretrained files")
    base = tmp_path_factory.mktemp("tiny")
    tree = write_tiny_tree(base / "tree", classes=("ant", "bee", "cow"), n_per_class=40, size=48)
    root = base / "root"; (root / "nbs" / "profiles").mkdir(parents=True)
    for f in [*(ROOT / "nbs").glob("*.ipynb"), ROOT / "nbs" / "manifest.yaml", ROOT / "settings.ini"]:
        (root / ("nbs" if f.suffix != ".ini" else "") / f.name).symlink_to(f)
    (root / "nbs" / "profiles" / "smoke.yaml").write_text(_profile(tree))
    env = {**os.environ, "METACOMPRESS_ROOT": str(root), "METACOMPRESS_DATA_DIR": str(base / "data"),
           "METACOMPRESS_FIGURES_DIR": str(base / "figures")}
    for step in STEPS:
        r = subprocess.run([sys.executable, "-c", "from metacompress.run import main; main()", step, "--profile", "smoke", "--no-progress"],
                           env=env, cwd=root, capture_output=True, text=True)
        assert r.returncode == 0, f"step {step} failed on the 3-class 48x48 dataset:\n{r.stderr[-3000:]}"
    return base

def test_every_step_writes_its_files(tiny_run):
    from metacompress.run import load_manifest
    figs = tiny_run / "figures" / "smoke"
    missing = [f for files in load_manifest().values() for f in files if not (figs / f).is_file()]
    assert not missing, missing

def test_class_count_and_image_size_come_from_the_data(tiny_run):
    s = torch.load(tiny_run / "data" / "splits" / "smoke.pt", weights_only=True)
    gen = torch.load(tiny_run / "data" / "generated" / "smoke" / "edm.pt", weights_only=True)
    assert tuple(gen["images"].shape[1:]) == (3, 48, 48) and set(gen["labels"].tolist()) == {0, 1, 2}
    meta = pd.read_parquet(tiny_run / "figures" / "smoke" / "metadata.parquet")
    assert meta[meta.applicable].y_test_acc.between(0, 1).all() and meta.model.nunique() >= 1
    zoo = pd.read_csv(tiny_run / "figures" / "smoke" / "zoo.csv")
    assert "resnet20_akamaster" in zoo.name.tolist()
