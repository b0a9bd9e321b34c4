"Reproducibility infrastructure: environment.yml, the manifest, the README's freshness, the docs site in a browser."
import time, base64, io, json, shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from metacompress.core import STEPS
from metacompress.run import (CHROMIUM_HINT, build_docs, check_site, find_chromium, load_manifest, profile_dir,
                              render_fresh_readme, requirement_name, settings_requirements, update_run_record)

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "figures" / "quick"


# --- environment.yml agrees with settings.ini -------------------------------------------------------------
def test_environment_yml_matches_settings_ini():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    listed = [s.replace(" ", "") for s in pip if not s.startswith("-e")]
    req = settings_requirements(ROOT / "settings.ini")
    assert {"requirements", "dev_requirements"} <= set(req), req
    wanted = [s.replace(" ", "") for v in req.values() for s in v]
    assert sorted(listed) == sorted(wanted), (
        f"environment.yml's pip list must equal settings.ini's requirements + every *_requirements (dev, lab, ...), same pins:\n"
        f"  only in environment.yml: {sorted(set(listed) - set(wanted))}\n  only in settings.ini: {sorted(set(wanted) - set(listed))}")
    assert len(set(map(requirement_name, listed))) == len(listed), "a package is listed twice in environment.yml"
    assert "-e ." in pip, "environment.yml must install the package itself (`-e .`)"
    ini = (ROOT / "settings.ini").read_text()
    min_py = next(l.split("=")[1].strip() for l in ini.splitlines() if l.startswith("min_python"))
    assert f"python={min_py}" in env["dependencies"], f"environment.yml must pin python={min_py} (settings.ini min_python)"


# --- the manifest ---------------------------------------------------------------------------------------------
def test_manifest_covers_every_committed_figure():
    listed = {f for files in load_manifest().values() for f in files}
    committed = {p.name for p in FIGURES.iterdir() if p.is_file() and not p.name.startswith(".")} - {"run_record.json"}
    assert not committed - listed, f"figures/quick/ holds files no step claims: add {sorted(committed - listed)} to nbs/manifest.yaml"
    assert set(load_manifest()) <= set(STEPS)


# --- README: fresh, and every measured number comes from a file ---------------------------------------------
@pytest.fixture(scope="module")
def fresh_readme():
    return render_fresh_readme(FIGURES)

def test_readme_is_fresh(fresh_readme):
    committed = (ROOT / "README.md").read_text(encoding="utf-8")
    if committed != fresh_readme:
        import difflib
        diff = "\n".join(list(difflib.unified_diff(committed.splitlines(), fresh_readme.splitlines(), "README.md", "fresh render", lineterm=""))[:40])
        pytest.fail(f"README.md is stale against figures/quick/ (or nbs/index.ipynb): run `make readme`\n{diff}")

def _fake_summary():
    return {"profile": "quick", "units": "accuracy fraction (0.01 = 1 pp)", "headline_source": "ideal", "n_rows": 4321, "n_cells": 987,
            "n_models": 6, "n_methods": 19, "top1_gap": {"random": {"meta": 0.0123, "erm": 0.2468, "noise_floor": 0.0042}},
            "topk_hit": {"random": {"meta": {"1": 0.41, "5": 0.87}}}, "mae": {"random": {"meta": 0.0311}},
            "per_source": {"diffusion": {"top1_gap": {"random": {"meta": 0.0456, "erm": 0.2468, "noise_floor": 0.0042}},
                                         "mae": {"random": {"meta": 0.0522}}}}}

def test_readme_numbers_follow_the_files(tmp_path, fresh_readme):
    figs = tmp_path / "quick"; shutil.copytree(FIGURES, figs)
    (figs / "summary.json").unlink(missing_ok=True); (figs / "run_record.json").unlink(missing_ok=True)
    zoo = pd.read_csv(figs / "zoo.csv"); zoo.loc[0, "test_acc"] = 0.1234; zoo.to_csv(figs / "zoo.csv", index=False)
    q = json.loads((figs / "edm_quality.json").read_text()); q["network_params"] = 2_345_678; q["train_seconds"] = 3 * 60 * 7.5
    (figs / "edm_quality.json").write_text(json.dumps(q))
    comp = pd.read_csv(figs / "compression.csv"); comp = comp[comp.method != comp.method.iloc[-1]]; comp.to_csv(figs / "compression.csv", index=False)
    missing = render_fresh_readme(figs)
    assert missing != fresh_readme
    assert "| 0.123 |" in missing and "2.35 M parameters" in missing and "trained for 22.5 minutes" in missing
    assert f"{comp.method.nunique()} methods" in missing
    assert "`figures/quick/summary.json`: not yet generated (run `make evaluate`)" in missing
    assert "`figures/quick/run_record.json`: not yet generated (run `make reproduce`)" in missing
    # summary.json and the run record, once they exist, are rendered: their numbers appear
    (figs / "summary.json").write_text(json.dumps(_fake_summary()))
    (figs / "run_record.json").write_text(json.dumps({"profile": "quick", "steps": {
        "finetune": {"notebook": "02_finetune.ipynb", "wall_seconds": 1234.5, "threads": 1, "seed": 0, "status": "ok", "finished": "2026-11-29T10:00:00+00:00", "cpu_utilisation": 0.5,
                     "hardware": {"cpu_model": "Imaginary CPU 9000", "cpu_cores_usable": 2, "gpu": None, "memory_gib": 7.5}, "packages": {"torch": "9.9.9", "python": "3.11"}}},
        "reproduce": {"status": "ok", "wall_seconds": 2400.0, "started": "2026-11-29T09:00:00+00:00", "finished": "2026-11-29T09:40:00+00:00",
                      "cpu_utilisation": 0.93}}))
    pd.DataFrame({"cell_id": ["a", "b"], "t_compress": [1.0, 3.0], "t_recovery": [2.0, 2.0], "t_total": [60.0, 66.0]}).to_csv(figs / "extract_timing.csv", index=False)
    pd.DataFrame({"model": ["m"], "constraint": ["ratio >= 2"], "method": ["lsq"], "pred_acc": [0.9], "measured_acc": [0.89]}).to_csv(figs / "recommend_verify.csv", index=False)
    pd.DataFrame({"name": ["m1", "m1", "m1"], "seed": [0, 1, 2], "test_acc": [0.9, 0.9123, 0.8877]}).to_csv(figs / "zoo_seed_spread.csv", index=False)
    pd.DataFrame({"model": ["m"] * 4, "method": ["none", "none", "lsq", "lsq"], "level": [0.0, 0.0, 4.0, 4.0], "seed": [0, 1, 0, 1],
                  "y_test_acc": [0.9, 0.93, 0.5, 0.5], "f_src_acc_ideal": [0.9, 0.9, 0.4, 0.45]}).to_csv(figs / "extract_seed_spread.csv", index=False)
    full = render_fresh_readme(figs)
    assert "2 applicable cells; total 2.1 CPU-minutes" in full and "| lsq |" in full
    assert "| m1 | 0.9000 | 0.9123 | 0.8877 | 2.4600 |" in full                     # the zoo's spread, range in pp
    assert "2 cells × 2 seeds (0, 1): test-accuracy range across seeds median 1.50 pp, max 3.00 pp" in full
    for text in ["4,321 rows", "987 compressed cells", "| 1.23 |", "| 24.68 |", "| 0.42 |", "| 0.87 |", "| 3.11 |", "| 4.56 |", "| 5.22 |",
                 "| diffusion |", "40.0 minutes", "overall **0.93**; per step: finetune 0.50", "| 1,234 |", "Imaginary CPU 9000", "torch 9.9.9"]:
        assert text in full, f"{text!r} missing from the rendered README"
    assert "not yet generated" not in full


# --- the docs site, in a browser ------------------------------------------------------------------------------
def _executed(path: Path, title: str, error: bool = False) -> Path:
    import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
    fig, ax = plt.subplots(figsize=(4, 3)); ax.plot([0, 2, 1, 3]); buf = io.BytesIO(); fig.savefig(buf, format="png"); plt.close(fig)
    outs = [new_output("display_data", data={"image/png": base64.b64encode(buf.getvalue()).decode(), "text/plain": "<Figure>"})]
    if error: outs.append(new_output("error", ename="ValueError", evalue="boom", traceback=["Traceback (most recent call last)", "ValueError: boom"]))
    nb = new_notebook(cells=[new_markdown_cell(f"# {title}\n> a step"), new_code_cell("plot()", outputs=outs)],
                      metadata={"kernelspec": {"name": "python3", "display_name": "python3", "language": "python"}})
    nbformat.write(nb, str(path)); return path

@pytest.fixture
def private_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("METACOMPRESS_DATA_DIR", str(tmp_path / "data")); monkeypatch.setenv("METACOMPRESS_FIGURES_DIR", str(tmp_path / "figures"))
    return tmp_path

def test_docs_site_renders_in_chromium(private_dirs):
    chromium = find_chromium()
    if not chromium: pytest.skip(CHROMIUM_HINT)
    runs = profile_dir("runs", "smoke")
    _executed(runs / "01_data.ipynb", "data"); _executed(runs / "02_finetune.ipynb", "finetune")
    update_run_record("smoke", "data", notebook="01_data.ipynb", status="ok", wall_seconds=3.0, finished="x")
    index = build_docs("smoke")
    assert index == profile_dir("site", "smoke") / "index.html" and not (ROOT / "docs" / "smoke").exists()
    res = check_site(index, chromium=chromium)
    assert set(res) == {"index.html", "01_data.html", "02_finetune.html"}
    assert all(v == [] for v in res.values()), res
    # the check can fail: a page with a traceback, and a page whose figure is gone
    _executed(runs / "03_generate.ipynb", "generate", error=True)
    index = build_docs("smoke")
    assert "error: ValueError: boom" in index.read_text()
    (index.parent / "02_finetune.html").write_text((index.parent / "02_finetune.html").read_text().replace('src="data:image/png', 'src="x:'))
    blank = index.parent / "blank.html"; blank.write_text("<html><body></body></html>")
    res = check_site(index, chromium=chromium)
    assert any("Traceback" in p for p in res["03_generate.html"]), res
    assert any("embedded figures" in p for p in res["02_finetune.html"]), res
    assert any("blank screenshot" in p for p in res["blank.html"]), res


# --- make reproduce: every step in order, then the manifest check ----------------------------------------------
def _step_nb(path: Path, out_file: str):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook
    params = new_code_cell('profile = "smoke"\nseed = 0\nwrite = True'); params.metadata["tags"] = ["parameters"]
    body = new_code_cell("from metacompress.core import figures_dir\n"
                         f"if write: (figures_dir(profile) / {out_file!r}).write_text(f'seed {{seed}}')")
    nbformat.write(new_notebook(cells=[params, body], metadata={"kernelspec": {"name": "python3", "display_name": "python3", "language": "python"}}), str(path))

def test_reproduce_runs_steps_in_order_and_checks_the_manifest(tmp_path, monkeypatch):
    from metacompress.run import ManifestError, load_run_record, run_all
    root = tmp_path / "repo"; (root / "nbs" / "profiles").mkdir(parents=True)
    monkeypatch.setenv("METACOMPRESS_ROOT", str(root))
    monkeypatch.setenv("METACOMPRESS_DATA_DIR", str(tmp_path / "data")); monkeypatch.setenv("METACOMPRESS_FIGURES_DIR", str(tmp_path / "figures"))
    _step_nb(root / "nbs" / "01_data.ipynb", "a.txt"); _step_nb(root / "nbs" / "02_finetune.ipynb", "b.txt")
    (root / "nbs" / "manifest.yaml").write_text("data: [a.txt]\nfinetune: [b.txt]\n")
    (root / "nbs" / "profiles" / "smoke.yaml").write_text("common: {seed: 0}\n01_data: {write: true}\n02_finetune: {write: true}\n")
    out = run_all("smoke", progress=False)
    assert [p.name for p in out] == ["01_data.ipynb", "02_finetune.ipynb"]
    rec = load_run_record("smoke")
    assert rec["reproduce"]["status"] == "ok" and rec["reproduce"]["steps"] == ["data", "finetune"]
    assert rec["steps"]["data"]["started_ts"] < rec["steps"]["finetune"]["started_ts"]       # pipeline order
    assert rec["steps"]["finetune"]["outputs"]["b.txt"]["bytes"] == len("seed 0") and rec["steps"]["data"]["seed"] == 0
    # rerun with a step that no longer writes its file and a step that did not run: both fail loudly, by name
    (root / "nbs" / "profiles" / "smoke.yaml").write_text("common: {seed: 0}\n01_data: {write: true}\n02_finetune: {write: false}\n")
    (root / "nbs" / "01_data.ipynb").unlink()
    time.sleep(1.5)   # the staleness check allows 1 s of clock slack: the rerun must start later than that
    with pytest.raises(ManifestError) as e: run_all("smoke", progress=False)
    msg = str(e.value)
    assert "2 figure/table file(s)" in msg and "step 'data' did not run in this run" in msg, msg
    assert "b.txt is older than its step's last run" in msg and "make finetune PROFILE=smoke FORCE=1" in msg, msg
    assert load_run_record("smoke")["reproduce"]["status"] == "manifest failed"


def test_makefile_exports_the_allocator_settings_the_runner_gives_its_steps():
    "The Makefile's MALLOC_* exports and core.MALLOC_ENV (what metacompress-run gives every step) are the same settings."
    import re
    from metacompress.core import MALLOC_ENV, project_root
    make = dict(re.findall(r"^export (MALLOC_\w+) \?= (\S+)$", (project_root() / "Makefile").read_text(), re.M))
    assert make == MALLOC_ENV, (make, MALLOC_ENV)


def test_runner_gives_its_steps_the_allocator_settings(monkeypatch):
    "metacompress-run puts core.MALLOC_ENV in the environment its steps' kernels and grid workers inherit (unless set)."
    import os
    from metacompress import run
    from metacompress.core import MALLOC_ENV
    for k in MALLOC_ENV: monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(run, "verify_manifest", lambda profile: None)   # the cheapest subcommand, its work stubbed
    run.main(["check", "--profile", "smoke"])
    assert {k: os.environ.get(k) for k in MALLOC_ENV} == MALLOC_ENV
