"Tests of metacompress.grid: resumable cells, fingerprints, the process pool, kill-and-resume."
import json, os, signal, subprocess, sys, textwrap, time
from pathlib import Path

import pytest

from metacompress.core import load_json
from metacompress.grid import cell_file, cell_id, demo_cell, error_file, fingerprint, get_engine, load_cell, run_grid

KEYS = [{"x": i} for i in range(6)]


def test_results_in_key_order_and_one_file_per_cell(tmp_path):
    r = run_grid(demo_cell, KEYS, {}, tmp_path, progress=False)
    assert list(r) == [cell_id(k) for k in KEYS] and [v["y"] for v in r.values()] == [k["x"] ** 2 for k in KEYS]
    assert sorted(p.name for p in tmp_path.glob("*.json")) == sorted(cell_file(tmp_path, k).name for k in KEYS)


def test_resume_skips_finished_and_stale_fingerprint_recomputes_only_that_cell(tmp_path):
    run_grid(demo_cell, KEYS, {}, tmp_path, progress=False)
    # every cell would crash if computed: a resumed run must compute none
    assert run_grid(demo_cell, KEYS, {"crash": [k["x"] for k in KEYS]}, tmp_path, progress=False)["3"]["y"] == 9
    r = run_grid(demo_cell, KEYS, {"offset": 100}, tmp_path, fingerprints=lambda k: "new" if k["x"] == 3 else "", progress=False)
    assert [v["y"] for v in r.values()] == [0, 1, 4, 109, 16, 25]
    r = run_grid(demo_cell, KEYS, {"offset": 7}, tmp_path, force=True, progress=False)
    assert [v["y"] for v in r.values()] == [k["x"] ** 2 + 7 for k in KEYS]


@pytest.mark.parametrize("workers", [1, 2])
def test_failing_cell_is_recorded_once_and_the_others_finish(tmp_path, workers):
    with pytest.raises(RuntimeError, match="crashed") as info:
        run_grid(demo_cell, KEYS, {"crash": [2]}, tmp_path, workers=workers, progress=False)
    assert "1 of 6" in "".join(getattr(info.value, "__notes__", []))                # the note names the count and files
    assert all(load_cell(tmp_path, k, fingerprint(k, "")) == {"y": k["x"] ** 2, "bad": False} for k in KEYS if k["x"] != 2)
    assert load_cell(tmp_path, KEYS[2], fingerprint(KEYS[2], "")) is None
    assert [p.name for p in tmp_path.glob("*.error")] == [error_file(tmp_path, KEYS[2]).name]
    err = load_json(error_file(tmp_path, KEYS[2]))
    assert err["key"] == KEYS[2] and err["error"] == "RuntimeError" and "crashed" in err["traceback"]
    # the cause fixed: the rerun computes only the failed cell and clears its error record
    r = run_grid(demo_cell, KEYS, {"crash": [0, 1, 3, 4, 5]}, tmp_path, workers=workers, progress=False)
    assert r["2"]["y"] == 4 and not list(tmp_path.glob("*.error"))


def test_duplicate_keys_and_unknown_engine_are_refused(tmp_path):
    with pytest.raises(ValueError, match="duplicate"): run_grid(demo_cell, [{"x": 1}, {"x": 1}], {}, tmp_path, progress=False)
    with pytest.raises(ValueError, match="local"): get_engine("nope")


def test_failures_are_counted_not_raised(tmp_path):
    r = run_grid(demo_cell, KEYS, {"bad": [1, 4]}, tmp_path, progress=False, failed=lambda v: v["bad"])
    assert [v["bad"] for v in r.values()] == [False, True, False, False, True, False]


def test_process_pool_equals_in_process(tmp_path):
    a = run_grid(demo_cell, KEYS, {"offset": 1}, tmp_path / "a", workers=1, progress=False)
    b = run_grid(demo_cell, KEYS, {"offset": 1}, tmp_path / "b", workers=2, progress=False)
    assert a == b


def test_pool_crash_propagates(tmp_path):
    with pytest.raises(RuntimeError, match="crashed"):
        run_grid(demo_cell, KEYS, {"crash": [0], "sleep": 0.01}, tmp_path, workers=2, progress=False)
    assert "demo_cell" in load_json(error_file(tmp_path, KEYS[0]))["traceback"]  # the worker's own traceback is kept


SCRIPT = textwrap.dedent("""
    import sys
    from metacompress.grid import demo_cell, run_grid
    run_grid(demo_cell, [{"x": i} for i in range(8)], {"sleep": 0.4}, sys.argv[1], workers=int(sys.argv[2]), progress=False)
""")

@pytest.mark.parametrize("workers", [1, 2])
def test_kill_mid_run_and_resume_equals_uninterrupted(tmp_path, workers):
    out = tmp_path / "killed"
    p = subprocess.Popen([sys.executable, "-c", SCRIPT, str(out), str(workers)], start_new_session=True)
    try:
        t0 = time.time()
        while len(list(out.glob("*.json"))) < 2 and time.time() - t0 < 120: time.sleep(0.05)
        os.killpg(p.pid, signal.SIGKILL)                      # the whole process group: workers too, mid-cell
    finally: p.wait()
    done = len(list(out.glob("*.json")))
    assert 2 <= done < 8, done                                # really interrupted
    keys = [{"x": i} for i in range(8)]
    resumed = run_grid(demo_cell, keys, {}, out, progress=False)
    clean = run_grid(demo_cell, keys, {}, tmp_path / "clean", progress=False)
    assert resumed == clean
    assert len(list(out.glob("*.json"))) == 8                 # one file per cell, no duplicates
    for f in out.glob("*.json"): json.loads(f.read_text())    # and no half-written cell file
