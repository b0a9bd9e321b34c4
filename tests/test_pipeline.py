"The smoke profile end to end through papermill, in a private data folder: files, schemas, resumption."
import json, os, shutil
from pathlib import Path
import pandas as pd
import pytest, torch
from metacompress.core import STEPS, load_profile
from metacompress.run import notebook_for, run_step

SMOKE = load_profile("smoke")

_SMOKE_RUN: dict[str, Path] = {}

def run_smoke_pipeline(tmp_path_factory) -> Path:
    """The smoke pipeline through papermill, run once per session (tests/test_steps_python.py compares its Python run
    with it). Returns the run's root; `<root>/notebooks/` keeps the files as the notebooks wrote them (figures/ and data/
    without the dataset cache), since the tests below rerun steps in place."""
    if not os.environ.get("METACOMPRESS_CIFAR10"): pytest.skip("METACOMPRESS_CIFAR10 is not set: the smoke pipeline needs real CIFAR-10")
    if not os.environ.get("METACOMPRESS_WEIGHTS"): pytest.skip("METACOMPRESS_WEIGHTS is not set: the smoke zoo needs the pretrained CIFAR-10 files")
    if "root" not in _SMOKE_RUN:
        root = tmp_path_factory.mktemp("smoke")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("METACOMPRESS_DATA_DIR", str(root / "data")); mp.setenv("METACOMPRESS_FIGURES_DIR", str(root / "figures"))
            for step in STEPS:
                if notebook_for(step).is_file(): run_step(step, "smoke", progress=False)
        shutil.copytree(root / "figures", root / "notebooks/figures")
        shutil.copytree(root / "data", root / "notebooks/data", ignore=shutil.ignore_patterns("cache", "runs"))
        _SMOKE_RUN["root"] = root
    return _SMOKE_RUN["root"]

@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    root = run_smoke_pipeline(tmp_path_factory)
    mp = pytest.MonkeyPatch()
    mp.setenv("METACOMPRESS_DATA_DIR", str(root / "data")); mp.setenv("METACOMPRESS_FIGURES_DIR", str(root / "figures"))
    yield root
    mp.undo()

def test_data_step(smoke_run):
    s = torch.load(smoke_run / "data/splits/smoke.pt", weights_only=True)
    p = SMOKE["01_data"]
    assert [len(s["indices"][k]) for k in ("train", "ideal", "test")] == [p["n_train"], p["n_ideal"], p["n_test"]]
    assert s["index_into"] == {"train": "train", "ideal": "test", "test": "test"}      # ideal/test unseen by the zoo
    assert not set(s["indices"]["ideal"].tolist()) & set(s["indices"]["test"].tolist())
    assert s["settings"]["dataset"] == p["dataset"] and len(s["mean"]) == len(s["std"]) == 3 and "trained_on" in s["provenance"]
    cache = torch.load(smoke_run / "data/cache" / s["cache"], weights_only=True)
    k = len(s["classes"])
    assert torch.bincount(cache["test_y"][s["indices"]["ideal"]], minlength=k).tolist() == [p["n_ideal"] // k] * k   # stratified
    assert (smoke_run / "figures/smoke/data_samples.png").stat().st_size > 10_000

def test_finetune_step(smoke_run):
    p = SMOKE["02_finetune"]
    names = list(p["pretrained"]) + list(p["archs"])
    zoo = pd.read_csv(smoke_run / "figures/smoke/zoo.csv")
    assert list(zoo.columns) == ["name", "family", "weights_source", "params", "macs", "size_mb", "claimed_acc",
                                 "test_acc_before", "finetune_kept", "finetune_rounds", "test_acc", "train_seconds", "seconds"]
    assert zoo.name.tolist() == names
    assert zoo.test_acc.between(0, 1).all() and (zoo.params > 5e4).all() and (zoo.macs > 5e5).all()
    pre = zoo[zoo.name.isin(p["pretrained"])]
    assert pre.test_acc_before.between(0, 1).all() and zoo[~zoo.name.isin(p["pretrained"])].test_acc_before.isna().all()
    assert (pre[pre.name != "lenet_captum"].test_acc_before > 0.8).all()        # real pretrained weights, adapter honoured
    for name in names:
        meta = json.loads((smoke_run / f"data/models/smoke/{name}.json").read_text())
        for k in ("name", "family", "weights_source", "trained_on", "test_acc_before", "test_acc", "recipe_hash"): assert k in meta, k
        if name in p["pretrained"]:
            assert "@sha256:" in meta["weights_source"] and 1 <= meta["finetune_rounds"] <= p["pt_rounds"]
            assert meta["steps"] == p["pt_steps"] * meta["finetune_rounds"]              # every round trained pt_steps
            assert meta["finetune_kept"] in ("pretrained", "finetuned")     # the touch-up was judged on the ideal split
            if meta["finetune_kept"] == "pretrained": assert meta["test_acc"] == meta["test_acc_before"]
        else: assert meta["weights_source"].startswith(("imagenet:", "scratch"))          # recorded either way
        assert meta["train_images"] == SMOKE["01_data"]["n_train"] and meta["test_n"] == SMOKE["01_data"]["n_test"]
        ckpt = torch.load(smoke_run / f"data/models/smoke/{name}.pt", weights_only=True)
        assert ckpt["meta"]["test_acc"] == meta["test_acc"]
    assert (smoke_run / "data/runs/smoke/02_finetune.ipynb").is_file()

def test_same_seed_same_numbers_on_rerun(smoke_run, monkeypatch):
    "Issue 14: with the same seed and thread count a zoo member trains to the same weights and test accuracy again."
    from metacompress.data import load_splits
    from metacompress.finetune import FinetuneSettings, finetune_member
    monkeypatch.setenv("METACOMPRESS_DATA_DIR", str(smoke_run / "data"))
    p = SMOKE["02_finetune"]
    torch.set_num_threads(p["threads"])
    settings = FinetuneSettings.from_params({**p, "seed": SMOKE["common"]["seed"], "progress": False}).member_settings()
    splits = load_splits("smoke")
    for name in p["pretrained"]:
        again = finetune_member({"name": name}, {"splits": splits, "settings": settings})
        saved = torch.load(smoke_run / f"data/models/smoke/{name}.pt", weights_only=True)
        assert again["meta"]["test_acc"] == saved["meta"]["test_acc"] and again["meta"]["recipe_hash"] == saved["meta"]["recipe_hash"]
        assert all(torch.equal(again["state_dict"][k], v) for k, v in saved["state_dict"].items()), name

def test_seed_spread_tables(smoke_run):
    "The zoo's and the grid slice's seed-to-seed spread: every seed present, seed 0 = the main run, kept out of the meta-dataset."
    z = pd.read_csv(smoke_run / "figures/smoke/zoo_seed_spread.csv")
    zoo = pd.read_csv(smoke_run / "figures/smoke/zoo.csv").set_index("name")
    pf = SMOKE["02_finetune"]
    assert sorted(z.seed.unique()) == sorted({SMOKE["common"]["seed"], *pf["spread_seeds"]}) and set(z.name) == set(pf["spread_members"])
    own = z[z.seed == SMOKE["common"]["seed"]].set_index("name").test_acc
    assert (own - zoo.loc[own.index].test_acc).abs().max() < 1e-4
    e = pd.read_csv(smoke_run / "figures/smoke/extract_seed_spread.csv")
    pe = SMOKE["05_extract"]
    assert set(e.model) == set(pe["spread_models"]) and set(e.method) == set(pe["spread_methods"])
    assert (e.groupby(["model", "method", "level"]).seed.apply(sorted) == [sorted({0, *pe["spread_seeds"]})] * e.groupby(["model", "method", "level"]).ngroups).all()
    md = pd.read_parquet(smoke_run / "figures/smoke/metadata.parquet")
    assert set(md.seed) == set(pe["seeds"])                                          # the spread cells stay out
    base = md[(md.source == "ideal") & md.applicable].set_index(["model", "method", "level"]).y_test_acc
    e0 = e[e.seed == 0].set_index(["model", "method", "level"]).y_test_acc
    assert (e0 - base.loc[e0.index]).abs().max() < 1e-4                            # seed 0 of the slice is the grid's own cell

def test_finetune_resumes_without_redoing_finished_models(smoke_run, monkeypatch):
    monkeypatch.setenv("METACOMPRESS_DATA_DIR", str(smoke_run / "data")); monkeypatch.setenv("METACOMPRESS_FIGURES_DIR", str(smoke_run / "figures"))
    p = SMOKE["02_finetune"]
    first, second = (list(p["pretrained"]) + list(p["archs"]))[:2]
    d = smoke_run / "data/models/smoke"
    kept = (d / f"{first}.pt").stat().st_mtime_ns
    (d / f"{second}.json").unlink()                       # as if killed while training the second model
    run_step("finetune", "smoke", progress=False)
    assert (d / f"{first}.pt").stat().st_mtime_ns == kept  # finished work untouched
    assert (d / f"{second}.json").is_file()                # unfinished work redone

def _use_smoke_profile(prof: dict, tmp_path, monkeypatch) -> None:
    "Point the runner at a copy of nbs/profiles/ whose smoke.yaml is `prof`."
    import yaml, metacompress.core as core
    pd_ = tmp_path / "profiles"; pd_.mkdir(parents=True)
    for f in core.profiles_dir().glob("*.yaml"): (pd_ / f.name).write_text(f.read_text())
    (pd_ / "smoke.yaml").write_text(yaml.safe_dump(prof))
    monkeypatch.setattr(core, "profiles_dir", lambda: pd_)

def test_finetune_retrains_when_the_recipe_changes(smoke_run, monkeypatch, tmp_path):
    monkeypatch.setenv("METACOMPRESS_DATA_DIR", str(smoke_run / "data")); monkeypatch.setenv("METACOMPRESS_FIGURES_DIR", str(smoke_run / "figures"))
    prof = load_profile("smoke"); first = prof["02_finetune"]["pretrained"][0]
    d = smoke_run / "data/models/smoke"
    before = json.loads((d / f"{first}.json").read_text())
    prof["02_finetune"]["pt_lr"] = prof["02_finetune"]["pt_lr"] * 2          # another recipe, same data
    _use_smoke_profile(prof, tmp_path, monkeypatch)
    run_step("finetune", "smoke", progress=False)
    after = json.loads((d / f"{first}.json").read_text())
    assert after["recipe_hash"] != before["recipe_hash"] and after["lr"] == prof["02_finetune"]["pt_lr"]

def test_run_record_manifest_and_docs_site(smoke_run):
    "The smoke run is recorded step by step, its files match the manifest, and its site renders in headless Chromium."
    from metacompress.run import CHROMIUM_HINT, build_docs, check_manifest, check_site, find_chromium, load_run_record
    ran = [s for s in STEPS if notebook_for(s).is_file()]
    rec = load_run_record("smoke")["steps"]
    assert set(ran) <= set(rec), f"steps missing from run_record.json: {set(ran) - set(rec)}"
    for s in ran:
        r = rec[s]
        assert r["status"] == "ok" and r["wall_seconds"] > 0 and r["hardware"]["cpu_cores"] >= 1 and r["packages"]["torch"], r
    assert check_manifest("smoke", steps=ran) == []
    index = build_docs("smoke")
    assert {p.stem for p in index.parent.glob("*.html")} >= {STEPS[s] for s in ran}
    chromium = find_chromium()
    if not chromium: pytest.skip(CHROMIUM_HINT)
    res = check_site(index, chromium=chromium)
    assert all(v == [] for v in res.values()), res

def test_extract_ray_engine_equals_local(smoke_run, tmp_path, monkeypatch):
    "The same cells under engine='ray' (one task per cell, nothing written on workers) give the local pool's table."
    pytest.importorskip("ray")
    from metacompress.compress import Budget
    from metacompress.extract import FeatureSettings, run_extract
    shutil.copytree(smoke_run / "data", tmp_path / "data", ignore=shutil.ignore_patterns("metadata", "runs"))
    monkeypatch.setenv("METACOMPRESS_DATA_DIR", str(tmp_path / "data")); monkeypatch.setenv("METACOMPRESS_FIGURES_DIR", str(tmp_path / "figures"))
    p = SMOKE["05_extract"]
    kw = dict(models=[SMOKE["02_finetune"]["pretrained"][0]], methods=["none", "global_magnitude"], levels="first", sources=["ideal", "none"],
              source_n=p["source_n"], budget=Budget(recovery_steps=1, batch_size=16, calib_images=16, latency_repeats=1),
              settings=FeatureSettings(grad_n=8, curvature_n=0, proxies=False), progress=False, force=True)
    local = run_extract("smoke", engine="local", workers=1, **kw)
    remote = run_extract("smoke", engine="ray", engine_options={"num_cpus": 1, "max_retries": 1}, **kw)
    keep = [c for c in local.columns if not c.startswith(("t_", "f_latency"))]
    pd.testing.assert_frame_equal(local[keep].sort_values(["cell_id", "source"]).reset_index(drop=True),
                                  remote[keep].sort_values(["cell_id", "source"]).reset_index(drop=True))

def test_extract_notebook_on_a_process_pool_equals_in_process(smoke_run, monkeypatch, tmp_path):
    """The 05_extract notebook with `workers: 2` (as the quick profile runs it) hands the spawned pool only objects it
    can import, and the pool computes exactly the table the in-process run makes (same seed, one thread each)."""
    shutil.copytree(smoke_run / "data", tmp_path / "data", ignore=shutil.ignore_patterns("runs", "metadata"))
    monkeypatch.setenv("METACOMPRESS_DATA_DIR", str(tmp_path / "data")); monkeypatch.setenv("METACOMPRESS_FIGURES_DIR", str(tmp_path / "figures"))
    tables = []
    for workers in (1, 2):                       # the same few cells, recomputed (force) in-process, then on the pool
        prof = load_profile("smoke")
        prof["05_extract"].update(models=[SMOKE["02_finetune"]["pretrained"][0]], methods=["none", "global_magnitude", "ptq_minmax"],
                                  spread_models=[], workers=workers, force=True)
        _use_smoke_profile(prof, tmp_path / f"w{workers}", monkeypatch)
        run_step("extract", "smoke", progress=False)
        tables.append(pd.read_parquet(tmp_path / "data/metadata/smoke/metadata.parquet"))
    keep = [c for c in tables[0].columns if not c.startswith(("t_", "f_latency"))]
    a, b = (t[keep].sort_values(["cell_id", "source"]).reset_index(drop=True) for t in tables)
    assert a.cell_id.nunique() == 3
    pd.testing.assert_frame_equal(a, b)


def test_restore_cells_reproduces_the_meta_dataset_and_refuses_another(smoke_run, tmp_path, monkeypatch):
    """`restore_cells` seeds an empty cell cache from figures/ (one cell recomputed and compared first): extract then
    computes nothing and writes the same meta-dataset; a file that the code would not write again restores nothing."""
    from metacompress.extract import RESTORED, plan_from_profile, restore_cells, run_extract
    # the files as the notebooks wrote them (the tests above rerun steps in place), the cell cache left out
    shutil.copytree(smoke_run / "notebooks/data", tmp_path / "data", ignore=shutil.ignore_patterns("metadata"))
    shutil.copytree(smoke_run / "data/cache", tmp_path / "data/cache")
    shutil.copytree(smoke_run / "notebooks/figures", tmp_path / "figures")
    monkeypatch.setenv("METACOMPRESS_DATA_DIR", str(tmp_path / "data")); monkeypatch.setenv("METACOMPRESS_FIGURES_DIR", str(tmp_path / "figures"))
    figs = tmp_path / "figures/smoke"; orig = pd.read_parquet(figs / "metadata.parquet")
    plan, p = plan_from_profile("smoke")
    bad = tmp_path / "bad"; shutil.copytree(figs, bad)
    orig.assign(y_test_acc=orig.y_test_acc + 1e-9).to_parquet(bad / "metadata.parquet", index=False)
    with pytest.raises(ValueError, match="does not give"): restore_cells(plan, bad, verify=1)
    assert not (plan.out / "cells" / RESTORED).exists()
    rec = restore_cells(plan, figs, verify=1)
    assert rec["restored"] + len(rec["recomputed_to_check"]) == orig.cell_id.nunique() == len(plan.keys) and len(rec["recomputed_to_check"]) == 1
    from metacompress.compress import Budget
    from metacompress.extract import FeatureSettings, RUN_PARAMS
    import dataclasses
    comp0 = pd.read_csv(figs / "compression.csv")
    stamps = {f: f.stat().st_mtime_ns for f in (plan.out / "cells").glob("*.json")}
    got = run_extract("smoke", models=p["models"], methods=p["methods"], levels=p["levels"], levels_per_model=p["levels_per_model"],
                      seeds=p["seeds"], sources=p["sources"], source_n=p["source_n"], test_n=p["test_n"], budget=Budget.from_params(p),
                      settings=FeatureSettings.from_params(p, others=[*RUN_PARAMS, *(f.name for f in dataclasses.fields(Budget))]),
                      seed=p["seed"], workers=1, threads=p["threads"], progress=False)
    assert stamps and {f: f.stat().st_mtime_ns for f in (plan.out / "cells").glob("*.json")} == stamps   # nothing recomputed
    keep = [c for c in orig.columns if not c.startswith(("t_", "f_latency"))]
    pd.testing.assert_frame_equal(got[keep].reset_index(drop=True), orig[keep].reset_index(drop=True))
    timed = lambda d: d.drop(columns=[c for c in d.columns if "latency" in c or "seconds" in c])
    pd.testing.assert_frame_equal(timed(pd.read_csv(figs / "compression.csv")), timed(comp0))
