"""Every step callable from Python: the smoke profile's steps through `run_<step>` (no papermill) write the tables the
notebooks write. The notebooks' run is the pipeline test's (`test_pipeline.run_smoke_pipeline`, once per session)."""
import dataclasses, inspect, json, os, shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from metacompress.compress import Budget, run_catalogue
from metacompress.core import step_params
from metacompress.data import DataSettings, run_data
from metacompress.evaluate import EvaluateSettings, run_evaluate
from metacompress.extract import RUN_PARAMS, run_extract
from metacompress.features import FeatureSettings
from metacompress.finetune import FinetuneSettings, run_finetune
from metacompress.generate import GenerateSettings, run_generate
from metacompress.predict import PredictSettings, run_predict
from metacompress.recommend import RecommendSettings, run_recommend
from metacompress.run import load_manifest
from test_pipeline import run_smoke_pipeline

# What differs between two runs of the same computation: wall-clock times, speeds, latencies, the machine's load
TIMING = ("seconds", "runtime", "per_s", "overhead", "load_avg", "latency", "wall", "_ms")

def _timed(name: str) -> bool: return str(name).startswith("t_") or any(t in str(name) for t in TIMING)

def _untimed(obj):
    "A JSON value without its timing keys (at any depth)."
    if isinstance(obj, dict): return {k: _untimed(v) for k, v in obj.items() if not _timed(k)}
    if isinstance(obj, list): return [_untimed(v) for v in obj]
    return obj

def _table(path: Path):
    "A file of the run as comparable data: a frame without timing columns, a JSON value without timing keys (PNGs: None)."
    if path.suffix == ".json": return _untimed(json.loads(path.read_text()))
    if path.suffix in (".csv", ".parquet"):
        df = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
        return df.drop(columns=[c for c in df.columns if _timed(c)])
    return None

def _same(a, b, what: str) -> None:
    if isinstance(a, pd.DataFrame): pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9, atol=1e-12, obj=what)
    else: assert a == b, f"{what}: the Python run differs from the notebooks'"

def _arguments(step_fn, section: dict) -> dict:
    "The section's values for `step_fn`'s keyword arguments of the same name (what the step's notebook passes it)."
    names = set(inspect.signature(step_fn).parameters) - {"profile", "budget", "settings", "progress"}
    return {k: v for k, v in section.items() if k in names}

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    "(the notebooks' files, the Python run's root): every step of the smoke profile run here through its `run_<step>`."
    notebooks = run_smoke_pipeline(tmp_path_factory) / "notebooks"
    root = tmp_path_factory.mktemp("python")
    # inputs that are caches, not tables: the decoded dataset (keyed by the source's content) and 05's per-cell
    # results (recomputing the grid's cells is the pipeline test's job; here run_extract assembles the step's tables)
    shutil.copytree(notebooks.parent / "data/cache", root / "data/cache", copy_function=os.link)
    for d in ("cells", "base"):
        if (notebooks / "data/metadata/smoke" / d).is_dir():
            shutil.copytree(notebooks / "data/metadata/smoke" / d, root / f"data/metadata/smoke/{d}")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("METACOMPRESS_DATA_DIR", str(root / "data")); mp.setenv("METACOMPRESS_FIGURES_DIR", str(root / "figures"))
        section = lambda nb: step_params("smoke", nb)
        torch.set_num_threads(1)
        run_data("smoke", DataSettings.from_params(section("01_data")), progress=False)
        run_finetune("smoke", FinetuneSettings.from_params(section("02_finetune")))
        run_generate("smoke", GenerateSettings.from_params(section("03_generate")), progress=False)
        s = section("04_compress")
        run_catalogue("smoke", budget=Budget.from_params(s), **_arguments(run_catalogue, s), progress=False)
        s = section("05_extract")
        run_extract("smoke", budget=Budget.from_params(s), settings=FeatureSettings.from_params(s, others=[*RUN_PARAMS, *(f.name for f in dataclasses.fields(Budget))]),
                    **_arguments(run_extract, s), progress=False)
        run_predict("smoke", PredictSettings.from_params(section("06_predict")), progress=False)
        run_evaluate("smoke", EvaluateSettings.from_params(section("07_evaluate")))
        run_recommend("smoke", RecommendSettings.from_params(section("08_recommend")))
    torch.set_num_threads(threads)
    return notebooks, root

@pytest.mark.parametrize("step", ["data", "finetune", "generate", "compress", "extract", "predict", "evaluate", "recommend"])
def test_step_from_python_writes_the_notebooks_tables(runs, step):
    notebooks, root = runs
    for f in load_manifest()[step]:
        a, b = notebooks / "figures/smoke" / f, root / "figures/smoke" / f
        assert b.is_file(), f"run_{step} did not write {f}"
        _same(_table(b), _table(a), f"{step}: {f}")

def test_data_files_from_python_equal_the_notebooks(runs):
    "The files later steps read: the splits, the generated dataset, the predictions."
    notebooks, root = runs
    load = lambda p: torch.load(p, weights_only=True)
    a, b = load(notebooks / "data/splits/smoke.pt"), load(root / "data/splits/smoke.pt")
    assert all(torch.equal(a["indices"][k], b["indices"][k]) for k in a["indices"])
    assert {k: v for k, v in a.items() if k != "indices"} == {k: v for k, v in b.items() if k != "indices"}
    a, b = load(notebooks / "data/generated/smoke/edm.pt"), load(root / "data/generated/smoke/edm.pt")
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["labels"], b["labels"]) and a["settings"] == b["settings"]
    for f in ("predictions.parquet", "folds.parquet"):
        _same(_table(root / "data/predict/smoke" / f), _table(notebooks / "data/predict/smoke" / f), f)
    assert json.loads((root / "figures/smoke/summary.json").read_text())["settings"] == EvaluateSettings.from_params(step_params("smoke", "07_evaluate")).to_dict()
