import os
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]

# `make test-py` runs the tests on two pytest-xdist workers (`-n 2 --dist loadgroup`): the two smoke pipelines (the
# papermill one that test_steps_python compares with, and the 3-class dataset's) are the long poles, so each group
# stays on one worker while the other tests fill the second core.
GROUPS = {"test_pipeline.py": "smoke_pipeline", "test_steps_python.py": "smoke_pipeline", "test_any_dataset.py": "any_dataset"}

def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):          # one torch thread per worker: two workers share two cores
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch; torch.set_num_threads(1)

@pytest.hookimpl(tryfirst=True)    # before xdist's own hook reads the marks (after it, the groups were silently ignored
def pytest_collection_modifyitems(config, items):   # and each worker ran its own copy of a pipeline)
    for item in items:
        if (g := GROUPS.get(Path(str(item.fspath)).name)): item.add_marker(pytest.mark.xdist_group(g))
    items.sort(key=lambda item: Path(str(item.fspath)).name not in GROUPS)   # the long poles start first (stable sort)

@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a test module (`pytestmark = pytest.mark.usefixtures("one_thread")`): small models on a
    shared 2-core machine run several times slower when OpenMP threads fight other processes."""
    import torch   # here, not at the top: every test loads conftest, the torch-free ones too
    old = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)

@pytest.fixture
def cifar10_source():
    "The CIFAR-10 source named by METACOMPRESS_CIFAR10 (set by .ci/run); tests needing real data skip without it."
    src = os.environ.get("METACOMPRESS_CIFAR10")
    if not src or not Path(src).exists(): pytest.skip("METACOMPRESS_CIFAR10 is not set: real CIFAR-10 tests skipped")
    return Path(src)
