"The smoke profile end to end through papermill, in a private data folder: files, schemas, resumption."
import json, os
import pandas as pd
import pytest, torch
from metacompress.core import STEPS, load_profile
from metacompress.run import notebook_for, run_step

SMOKE = load_profile("smoke")

@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    src = os.environ.get("METACOMPRESS_CIFAR10")
    if not src: pytest.skip("METACOMPRESS_CIFAR10 is not set: the smoke pipeline needs real CIFAR-10")
    root = tmp_path_factory.mktemp("smoke")
    mp = pytest.MonkeyPatch()
    mp.setenv("METACOMPRESS_DATA_DIR", str(root / "data")); mp.setenv("METACOMPRESS_FIGURES_DIR", str(root / "figures"))
    for step in STEPS:
        if notebook_for(step).is_file(): run_step(step, "smoke", progress=False)
    yield root
    mp.undo()

def test_data_step(smoke_run):
    s = torch.load(smoke_run / "data/splits/smoke.pt", weights_only=True)
    p = SMOKE["01_data"]
    assert [len(s["indices"][k]) for k in ("train", "ideal", "test")] == [p["n_train"], p["n_ideal"], p["n_test"]]
    assert (smoke_run / "figures/smoke/data_samples.png").stat().st_size > 10_000

def test_finetune_step(smoke_run):
    archs = SMOKE["02_finetune"]["archs"]
    zoo = pd.read_csv(smoke_run / "figures/smoke/zoo.csv")
    assert list(zoo.columns) == ["arch", "weights_source", "params", "macs", "size_mb", "test_acc", "train_seconds"]
    assert zoo.arch.tolist() == archs
    assert zoo.test_acc.between(0, 1).all() and (zoo.params > 1e6).all() and (zoo.macs > 1e6).all()
    for arch in archs:
        meta = json.loads((smoke_run / f"data/models/smoke/{arch}.json").read_text())
        assert meta["weights_source"].startswith(("imagenet:", "scratch"))          # recorded either way
        assert meta["train_images"] == SMOKE["01_data"]["n_train"]
        ckpt = torch.load(smoke_run / f"data/models/smoke/{arch}.pt", weights_only=True)
        assert ckpt["meta"]["test_acc"] == meta["test_acc"]
    assert (smoke_run / "data/runs/smoke/02_finetune.ipynb").is_file()

def test_finetune_resumes_without_redoing_finished_models(smoke_run, monkeypatch):
    monkeypatch.setenv("METACOMPRESS_DATA_DIR", str(smoke_run / "data")); monkeypatch.setenv("METACOMPRESS_FIGURES_DIR", str(smoke_run / "figures"))
    first, second = SMOKE["02_finetune"]["archs"][:2]
    d = smoke_run / "data/models/smoke"
    kept = (d / f"{first}.pt").stat().st_mtime_ns
    (d / f"{second}.json").unlink()                       # as if killed while training the second model
    run_step("finetune", "smoke", progress=False)
    assert (d / f"{first}.pt").stat().st_mtime_ns == kept  # finished work untouched
    assert (d / f"{second}.json").is_file()                # unfinished work redone
