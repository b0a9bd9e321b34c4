"The Ray engine on one shared local instance (2 CPUs): same results as a loop, a killed worker, a failing cell, one put."
import os, signal, sys, time
from pathlib import Path
import pytest

ray = pytest.importorskip("ray", reason='Ray is an optional extra: pip install -e ".[ray]"')
from metacompress import ray_engine
from metacompress.ray_engine import map_cells, ray_available, require_ray, is_system_failure

# The cells below live in this test module, which Ray's workers cannot import: ship them by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

@pytest.fixture(scope="module")
def local_ray():
    if ray.is_initialized(): ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, log_to_driver=False,
             logging_level="warning")
    yield ray
    ray.shutdown()

def square_cell(key, common): return {"key": key, "value": key * key + common["offset"], "n": len(common["blob"])}

def pid_cell(key, common):
    "Appends one line per attempt; the victim key writes its pid and waits to be killed on its first attempt only."
    d = Path(common["dir"])
    with open(d / f"attempts_{key}", "a") as f: f.write(f"{os.getpid()}\n")
    if key == common["victim"] and not (d / "victim.pid").exists():
        tmp = d / "victim.pid.tmp"; tmp.write_text(str(os.getpid())); tmp.rename(d / "victim.pid")
        time.sleep(60)                                        # killed long before this ends
    return key * 10

def failing_cell(key, common):
    with open(Path(common["dir"]) / f"attempts_{key}", "a") as f: f.write("x\n")
    if key == common["bad"]: raise ValueError(f"cell {key} is broken")
    return key

def collect():
    calls = []
    return calls, lambda k, r: calls.append((k, r))

def test_same_results_as_a_loop(local_ray):
    common, keys = {"offset": 3, "blob": b"z" * 1000}, list(range(8))
    calls, on_result = collect()
    map_cells(square_cell, keys, common, on_result, num_cpus=1)
    assert sorted(calls, key=lambda c: c[0]) == [(k, square_cell(k, common)) for k in keys]
    assert ray.is_initialized(), "an instance that was already running must be reused and left running"

def test_killed_worker_is_retried_and_every_cell_recorded_once(local_ray, tmp_path):
    keys, victim = list(range(8)), 3
    common = {"dir": str(tmp_path), "victim": victim}
    calls, on_result = collect(); errors = []
    import threading
    killed = {}
    def killer():
        pid_file, t0 = tmp_path / "victim.pid", time.time()
        while not pid_file.exists() and time.time() - t0 < 60: time.sleep(0.05)
        pid = int(pid_file.read_text())
        assert pid != os.getpid()
        os.kill(pid, signal.SIGKILL); killed["pid"] = pid
    th = threading.Thread(target=killer, daemon=True); th.start()
    map_cells(pid_cell, keys, common, on_result, on_error=lambda k, e: errors.append((k, e)), max_retries=2)
    th.join(5)
    assert killed, "the victim cell never started"
    assert errors == []
    assert sorted(calls) == [(k, k * 10) for k in keys]                          # every key once, no duplicate
    pids = (tmp_path / f"attempts_{victim}").read_text().split()
    assert len(pids) == 2 and pids[0] == str(killed["pid"]) != pids[1]           # retried once, in a new worker

def test_killed_worker_without_retries_is_a_system_failure(local_ray, tmp_path):
    common = {"dir": str(tmp_path), "victim": 0}
    calls, on_result = collect(); errors = []
    def kill_when_ready():
        while not (tmp_path / "victim.pid").exists(): time.sleep(0.05)
        os.kill(int((tmp_path / "victim.pid").read_text()), signal.SIGKILL)
    import threading; threading.Thread(target=kill_when_ready, daemon=True).start()
    map_cells(pid_cell, [0, 1], common, on_result, on_error=lambda k, e: errors.append((k, e)), max_retries=0)
    assert calls == [(1, 10)]
    assert [k for k, _ in errors] == [0] and is_system_failure(errors[0][1])

def test_failing_cell_reported_once_not_retried(local_ray, tmp_path):
    keys, bad = list(range(5)), 2
    common = {"dir": str(tmp_path), "bad": bad}
    calls, on_result = collect(); errors = []
    map_cells(failing_cell, keys, common, on_result, on_error=lambda k, e: errors.append((k, e)), max_retries=2)
    assert sorted(calls) == [(k, k) for k in keys if k != bad]
    assert len(errors) == 1 and errors[0][0] == bad
    assert isinstance(errors[0][1], ValueError) and "cell 2 is broken" in str(errors[0][1])
    assert not is_system_failure(errors[0][1])
    assert (tmp_path / f"attempts_{bad}").read_text() == "x\n"                   # ran exactly once

def test_grid_on_ray_records_a_failing_cell_once(local_ray, tmp_path):
    from metacompress.core import load_json
    from metacompress.grid import error_file, run_grid
    keys = [{"x": i} for i in range(5)]
    common = {"dir": str(tmp_path), "bad": {"x": 2}}
    with pytest.raises(ValueError, match="is broken"):
        run_grid(failing_cell, keys, common, tmp_path / "cells", engine="ray", progress=False)
    assert sorted(p.name for p in (tmp_path / "cells").glob("*.error")) == [error_file(tmp_path / "cells", keys[2]).name]
    assert load_json(error_file(tmp_path / "cells", keys[2]))["error"] == "ValueError"
    assert len(list((tmp_path / "cells").glob("*.json"))) == 4                      # the others finished and were saved
    assert (tmp_path / "attempts_{'x': 2}").read_text() == "x\n"                   # ran once: an exception is not retried

def test_failing_cell_without_on_error_raises(local_ray, tmp_path):
    with pytest.raises(ValueError, match="cell 0 is broken"):
        map_cells(failing_cell, [0], {"dir": str(tmp_path), "bad": 0}, lambda k, r: None)

def test_common_is_put_once(local_ray, monkeypatch):
    puts, real_put = [], ray.put
    def counting_put(obj, *a, **kw): puts.append(obj); return real_put(obj, *a, **kw)
    monkeypatch.setattr(ray, "put", counting_put)
    common = {"offset": 0, "blob": bytes(200_000)}                                # above Ray's inline-argument size
    calls, on_result = collect(); ticks = []
    map_cells(square_cell, list(range(6)), common, on_result, progress=ticks.append)
    assert len(puts) == 1 and puts[0] is common
    assert sorted(r["n"] for _, r in calls) == [200_000] * 6
    assert sorted(ticks) == list(range(6))                                        # progress once per finished cell

def test_impossible_resources_on_own_local_instance_is_an_error(local_ray):
    with pytest.raises(ValueError, match="ray_num_gpus"):
        ray_engine._check_resources(ray, 1, 1, own_local=True)
    with pytest.warns(UserWarning, match="ray_num_cpus"):
        ray_engine._check_resources(ray, 64, 0, own_local=False)

def test_empty_keys_and_bad_arguments():
    map_cells(square_cell, [], {}, lambda k, r: pytest.fail("no cell to run"))
    with pytest.raises(ValueError, match="negative"): map_cells(square_cell, [1], {}, lambda k, r: None, max_retries=-1)

def test_missing_ray_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)                                 # `import ray` raises ImportError
    with pytest.raises(ImportError, match=r'pip install -e "\.\[ray\]"'): require_ray()


def test_zoo_members_run_as_ray_tasks_like_the_local_engine(local_ray, tmp_path, monkeypatch):
    "Issue 13: finetune_zoo(engine='ray') trains one task per member; the driver writes the same checkpoints as locally."
    import torch
    from types import SimpleNamespace
    from metacompress.finetune import finetune_zoo, zoo_paths
    from metacompress.testing import toy_split
    monkeypatch.setenv("METACOMPRESS_DATA_DIR", str(tmp_path))
    torch.set_num_threads(1)                                     # as a one-CPU Ray task: the same arithmetic order
    toy = SimpleNamespace(train=toy_split(64, 10, 32), test=toy_split(32, 10, 32, seed=1), classes=tuple("abcdefghij"),
                          data_hash="toy", image_size=32)
    names, kw = ["squeezenet1_1", "mobilenet_v3_small"], dict(weights="none", epochs=1, batch_size=32, progress=False, device="cpu")
    local = finetune_zoo("loc", names, toy, **kw)
    remote = finetune_zoo("ray", names, toy, engine="ray", engine_options={"num_cpus": 1, "max_retries": 1}, **kw)
    assert remote.name.tolist() == names and remote.test_acc.tolist() == local.test_acc.tolist()
    for n in names:
        a, b = (torch.load(zoo_paths(p, n)[0], weights_only=True)["state_dict"] for p in ("loc", "ray"))
        assert all(torch.equal(a[k], b[k]) for k in a), n
    again = finetune_zoo("ray", names, toy, engine="ray", **kw)     # finished members are not sent to Ray again
    assert again.test_acc.tolist() == local.test_acc.tolist()
