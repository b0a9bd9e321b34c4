"""The runner says what a step says (issue 23): warnings and progress reach the terminal, a failure is one line with exit 1,
the run record tells finished / failed / interrupted apart; `make reproduce` runs independent steps side by side and
records CPU utilisation (issue 19). Fake step notebooks in a private checkout: seconds, no pipeline."""
import json, os, signal, subprocess, sys, textwrap, time
from pathlib import Path
import pytest

def _nb(path: Path, *cells: str, params: str = 'profile = "smoke"\nseed = 0') -> Path:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook
    p = new_code_cell(params); p.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[p, *[new_code_cell(textwrap.dedent(c)) for c in cells]],
                      metadata={"kernelspec": {"name": "python3", "display_name": "python3", "language": "python"}})
    path.parent.mkdir(parents=True, exist_ok=True); nbformat.write(nb, str(path)); return path

@pytest.fixture
def repo(tmp_path, monkeypatch):
    root = tmp_path / "repo"; (root / "nbs" / "profiles").mkdir(parents=True)
    (root / "nbs" / "profiles" / "smoke.yaml").write_text("common: {seed: 0}\n01_data: {}\n02_finetune: {}\n03_generate: {}\n")
    (root / "nbs" / "manifest.yaml").write_text("{}\n")
    for k, v in {"METACOMPRESS_ROOT": root, "METACOMPRESS_DATA_DIR": tmp_path / "data", "METACOMPRESS_FIGURES_DIR": tmp_path / "figures"}.items():
        monkeypatch.setenv(k, str(v))
    monkeypatch.chdir(tmp_path)
    return root

def test_warnings_and_progress_reach_the_terminal_and_a_failure_is_one_line(repo, capfd):
    from metacompress.run import load_run_record, main
    _nb(repo / "nbs" / "01_data.ipynb", """
        import warnings, time
        from tqdm.auto import tqdm
        for i in tqdm(range(3), desc="decode train", mininterval=0): time.sleep(0.05)
        warnings.warn("3 files skipped: 3 unsupported suffix '.txt'")""")
    _nb(repo / "nbs" / "02_finetune.ipynb", "def deep(): raise ValueError('n_test=0 leaves the test split empty: set n_test > 0')\ndeep()")
    main(["data", "--profile", "smoke", "--no-progress"])
    err = capfd.readouterr().err
    assert "[data] " in err and "UserWarning: 3 files skipped" in err, err               # the warning, as the step runs
    assert "[data] decode train: 100%" in err and "3/3" in err, err                       # its progress bar's final state
    assert "IProgress not found" not in err
    rec = load_run_record("smoke")["steps"]["data"]
    assert rec["status"] == "ok" and rec["progress"] == {"desc": "decode train", "n": 3, "total": 3}
    assert rec["cpu_seconds"] >= 0 and 0 <= rec["cpu_utilisation"] <= 1 and rec["cores"] >= 1
    with pytest.raises(SystemExit) as e: main(["finetune", "--profile", "smoke", "--no-progress"])
    assert e.value.code == 1
    err = capfd.readouterr().err
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert lines == ["error: finetune failed: ValueError: n_test=0 leaves the test split empty: set n_test > 0 "
                     "(traceback: data/runs/smoke/02_finetune.ipynb)"], err
    assert "Traceback" not in err and "PapermillExecutionError" not in err, err
    assert load_run_record("smoke")["steps"]["finetune"]["status"] == "failed"
    with pytest.raises(SystemExit): main(["finetune", "--profile", "smoke", "--no-progress", "--verbose"])
    err = capfd.readouterr().err
    assert "deep()" in err and "ValueError" in err and err.strip().splitlines()[-1].startswith("error: finetune failed"), err

def test_the_kernels_own_output_goes_to_its_log_not_the_terminal(repo, capfd):
    """What the kernel process itself prints (ipykernel's log; tornado's traceback when a kernel is shut down
    mid-flush after a failing cell) would break the one-line failure: it goes to `<step>.kernel.log`, the cells' output still
    reaches the terminal."""
    from metacompress.run import main
    _nb(repo / "nbs" / "01_data.ipynb", "from ipykernel.kernelapp import IPKernelApp\n"
        "IPKernelApp.instance().log.error('Traceback (most recent call last): kernel internals')\n"
        "import sys; print('the cell says', file=sys.stderr)")
    main(["data", "--profile", "smoke", "--no-progress"])
    err = capfd.readouterr().err
    assert "[data] the cell says" in err and "kernel internals" not in err, err
    assert "kernel internals" in (repo.parent / "data" / "runs" / "smoke" / "01_data.kernel.log").read_text()

def test_interrupted_step_is_recorded_and_check_says_so(repo, capfd):
    "A step killed outright (SIGKILL: no chance to write) is `running` with a dead pid: the check calls it interrupted, with its progress."
    from metacompress.run import main, step_state, update_run_record
    _nb(repo / "nbs" / "05_extract.ipynb", "x = 1")
    dead = subprocess.Popen([sys.executable, "-c", "pass"]); dead.wait()
    update_run_record("smoke", "extract", status="running", pid=dead.pid, host=os.uname().nodename, started="2026-12-01T10:00:00+00:00",
                      started_ts=time.time(), progress={"desc": "cells", "n": 10, "total": 20})
    update_run_record("smoke", "data", status="running", pid=os.getpid(), host=os.uname().nodename, started="now", started_ts=time.time())
    with pytest.raises(SystemExit) as e: main(["check", "--profile", "smoke"])
    msg = str(e.value.code)
    assert "extract was interrupted at 10 of 20 cells" in msg and "make extract PROFILE=smoke" in msg, msg
    assert "data is still running" in msg, msg
    assert step_state({"status": "ok"}) == "ok" and step_state({"status": "running", "pid": dead.pid, "host": os.uname().nodename}) == "interrupted"

def test_reproduce_runs_independent_steps_side_by_side(repo, capfd):
    """generate trains beside finetune; its cell that reads the zoo waits for finetune; CPU utilisation per step and
    overall in the run record. Then a failing step stops the run: one line, and the step beside it is interrupted."""
    from metacompress.run import load_run_record, run_all, StepFailed
    out = repo.parent / "zoo.txt"
    _nb(repo / "nbs" / "01_data.ipynb", "x = 1")
    _nb(repo / "nbs" / "02_finetune.ipynb", f"import time; time.sleep(4); open({str(out)!r}, 'w').write('zoo')")
    _nb(repo / "nbs" / "03_generate.ipynb", "import time; t_train = time.time()\ns = sum(range(5 * 10**6))",
        f"def load_zoo(p): return open({str(out)!r}).read()\nassert load_zoo(profile) == 'zoo'")
    run_all("smoke", progress=False, jobs=2)
    rec = load_run_record("smoke")
    st = rec["steps"]
    assert [st[s]["status"] for s in ("data", "finetune", "generate")] == ["ok"] * 3
    assert st["generate"]["started_ts"] < st["finetune"]["started_ts"] + st["finetune"]["wall_seconds"]   # side by side
    assert st["data"]["started_ts"] + st["data"]["wall_seconds"] <= st["generate"]["started_ts"] + 1e-3   # after its data
    r = rec["reproduce"]
    assert r["status"] == "ok" and r["jobs"] == 2 and 0 < r["cpu_utilisation"] <= 1 and r["cpu_seconds"] > 0
    assert all(0 < st[s]["cpu_utilisation"] <= 1 for s in ("data", "finetune", "generate"))
    # a failure stops the run: one line naming step, message and notebook; the step running beside it is interrupted
    out.unlink()
    _nb(repo / "nbs" / "02_finetune.ipynb", "import time; time.sleep(3)\nraise ValueError('boom')")
    _nb(repo / "nbs" / "03_generate.ipynb", "import time\nfor i in range(600): time.sleep(0.1)")
    with pytest.raises(StepFailed) as e: run_all("smoke", progress=False, jobs=2)
    assert str(e.value) == "finetune failed: ValueError: boom (traceback: data/runs/smoke/02_finetune.ipynb)"
    st = load_run_record("smoke")["steps"]
    assert st["finetune"]["status"] == "failed" and st["generate"]["status"] == "interrupted", st["generate"]
    assert load_run_record("smoke")["reproduce"]["status"] == "failed"
