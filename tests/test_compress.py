"Tests of metacompress.compress: the registry, every method on a small model, accounting, errors, the resumable grid."
import copy, math

import pytest
import torch
import torch.nn as nn
import torchvision

from metacompress.compress import (METHODS, Budget, NotApplicable, TinyNet, accounting, compress, conv_channels,
                                   get_method, grid_cells, mac_report, register, run_grid, size_report,
                                   weight_sparsity)
from metacompress.finetune import toy_split

BUDGET = Budget(recovery_steps=2, batch_size=32, calib_images=32, slim_sparsity_steps=2, taylor_batches=1,
                latency_repeats=1, latency_warmup=0)
QUANT = ("ptq_minmax", "ptq_percentile", "ptq_mse", "qat_ste", "lsq", "dorefa_pact")
PRUNE_U = ("global_magnitude", "layer_magnitude", "random_unstructured")
PRUNE_S = ("l1_filter", "group_norm", "fpgm", "slim", "taylor", "random_channels")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # small models on a shared 2-core machine: OpenMP threads fighting other processes cost 4x here
    old = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)

@pytest.fixture(scope="module")
def toy(): return toy_split(128, num_classes=10)

@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return TinyNet().eval()

@pytest.fixture(scope="module")
def base(net): return accounting(net, repeats=1, warmup=0)


def test_catalogue():
    cells = grid_cells()                      # loads the quantisation schemes too
    names = {m for m, _ in cells}
    assert {"none", *PRUNE_U, *PRUNE_S, "svd", "tucker2", "slim+lsq4", "l1+ptq8", *QUANT} <= names
    fam = {n: get_method(n).family for n in names}
    assert fam["slim"] == "structured" and fam["global_magnitude"] == "unstructured" and fam["svd"] == "lowrank"
    assert fam["ptq_mse"] == "ptq" and fam["lsq"] == "qat" and fam["l1+ptq8"] == "pipeline"
    assert not get_method("ptq_minmax").trains and get_method("lsq").trains
    assert [l for m, l in cells if m == "ptq_minmax"] == [8, 6, 4, 3, 2]


@pytest.mark.parametrize("method", sorted(set(METHODS) | set(QUANT)))
def test_every_method_on_a_small_model(method, net, toy, base):
    m = get_method(method)
    level = 4 if m.kind == "bits" else m.grid[min(1, len(m.grid) - 1)]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    out, rep = compress(net, method, level, toy, BUDGET, eval_split=toy[:32], base=base, name="tiny")
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())      # the input is untouched
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad(): assert out(x).shape == (3, 10)
    assert rep["applicable"] and rep["method"] == method and 0 <= rep["test_acc"] <= 1 and rep["eval_n"] == 32
    assert rep["latency_b1_ms"] > 0 and rep["latency_b64_ms"] > 0 and rep["seconds"] > 0
    tol = {"sparsity": 0.01, "channel_fraction": 0.15 if "slim" in method else 0.06, "bits": 0, "rank_ratio": 0.05, "none": 0}[m.kind]
    assert abs(rep["achieved"] - level) <= tol, (rep["achieved"], level)
    if m.kind == "bits": assert (rep["w_bits"], rep["a_bits"]) == (4, 4) and rep["runtime"] == "fake-quant"
    if m.family != "baseline": assert rep["compression_ratio"] > 1.2, rep["compression_ratio"]
    assert rep["recovery_steps"] == (BUDGET.recovery_steps if m.trains or method == "l1+ptq8" else 0)


def test_structured_pruning_removes_params_and_macs():
    import torch_pruning as tp
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    macs0, params0 = tp.utils.count_ops_and_params(model, x)
    out, rep = compress(model, "l1_filter", 0.4, toy_split(64), Budget(recovery_steps=0, calib_images=8, latency_repeats=1, latency_warmup=0))
    macs1, params1 = tp.utils.count_ops_and_params(out, x)
    # each coupled group keeps 60% of its channels: weights of a conv shrink to ~0.6 x 0.6
    assert 0.30 < params1 / params0 < 0.42 and 0.30 < macs1 / macs0 < 0.42, (params1 / params0, macs1 / macs0)
    assert rep["params"] == params1 and abs(rep["macs"] / macs1 - 1) < 0.03
    assert abs(rep["achieved"] - 0.4) < 0.02
    assert out.fc.out_features == 10 and conv_channels(out)["conv1"] == round(64 * 0.6)


@pytest.mark.parametrize("method", PRUNE_U)
def test_unstructured_keeps_macs_and_shrinks_size(method, net, toy, base):
    out, rep = compress(net, method, 0.9, toy, BUDGET, base=base)
    assert rep["macs"] == base["macs"] and rep["bops"] == base["bops"] and rep["params"] == base["params"]
    assert abs(rep["sparsity"] - 0.9) < 0.01 and rep["nonzero_params"] < 0.2 * base["params"]
    assert rep["sparse_tensors"] > 0 and rep["size_bytes"] < 0.45 * base["size_bytes"]
    assert not any(hasattr(m, "weight_orig") for m in out.modules())                   # masks made permanent


def test_sparse_storage_pays_index_overhead():
    lin = nn.Linear(64, 64, bias=False)
    with torch.no_grad(): lin.weight.zero_(); lin.weight[:, :8] = 1                    # 1/8 nonzero
    csr = 512 * (32 + 6) + 32 * 65; bitmask = 4096 + 512 * 32
    assert size_report(lin)["size_bytes"] == math.ceil(min(csr, bitmask) / 8)
    with torch.no_grad(): lin.weight.fill_(1); lin.weight[0, 0] = 0                     # 1 zero: stays dense
    assert size_report(lin)["size_bytes"] == 4096 * 4


@pytest.mark.parametrize("scheme", QUANT)
@pytest.mark.parametrize("bits", [4, 2])
def test_quantised_weights_take_at_most_2b_values(scheme, bits, net, toy, base):
    from metacompress.quantize import layer_bits, quantized_weight
    out, rep = compress(net, scheme, bits, toy, BUDGET, base=base)
    layers = [m for m in out.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    at_b = [m for m in layers if layer_bits(m) == (bits, bits)]
    assert len(at_b) == len(layers) - 2                                                 # first and last at 8 bits
    for m in at_b:
        w = quantized_weight(m).reshape(m.weight.shape[0], -1)
        assert max(len(row.unique()) for row in w) <= 2 ** bits
    assert rep["bops"] < base["bops"] * (bits / 32) ** 2 * 3


def test_int8_deployment_is_measured(net, toy, base):
    out, rep = compress(net, "ptq_minmax", 8, toy, BUDGET, eval_split=toy[:32], base=base)
    assert rep["runtime"] == "int8-x86" and 0 <= rep["int8_test_acc"] <= 1
    assert any(".quantized" in type(m).__module__ for m in rep["int8_model"].modules())
    _, rep6 = compress(net, "ptq_minmax", 6, toy, BUDGET, base=base)
    assert rep6["runtime"] == "fake-quant" and "int8_model" not in rep6


def test_qat_trains_its_quantisers_in_recovery(net, toy, base):
    a, _ = compress(net, "lsq", 4, toy, Budget(**{**BUDGET.__dict__, "recovery_steps": 0}), base=base)
    b, _ = compress(net, "lsq", 4, toy, BUDGET, base=base)
    qa = {n: p for n, p in a.named_parameters() if "quant" in n}
    qb = dict(b.named_parameters())
    assert qa and any(not torch.equal(p, qb[n]) for n, p in qa.items())


def test_clear_errors(net, toy, base):
    with pytest.raises(ValueError, match="valid: .*global_magnitude"): compress(net, "magic", 0.5, toy, BUDGET)
    with pytest.raises(ValueError, match=r"0 < level <= 0.99"): compress(net, "global_magnitude", 1.0, toy, BUDGET)
    with pytest.raises(ValueError, match=r"one of \[8, 6, 4, 3, 2\]"): compress(net, "lsq", 5, toy, BUDGET)
    with pytest.raises(ValueError, match="0 < level"): compress(net, "svd", 0, toy, BUDGET)
    with pytest.raises(NotApplicable, match="no BatchNorm"): compress(TinyNet(bn=False), "slim", 0.4, toy, BUDGET)
    pointwise = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 64, 1), nn.Conv2d(64, 64, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(NotApplicable, match="no layer of this model gets smaller"): compress(pointwise, "tucker2", 0.25, toy, BUDGET)


def test_torch_pruning_failure_is_not_applicable(toy):
    # ShuffleNetV2's channel split/shuffle makes Torch-Pruning 1.6 divide by zero: a reported pair, not a crash
    model = torchvision.models.shufflenet_v2_x1_0(num_classes=10).eval()
    with pytest.raises(NotApplicable, match="ZeroDivisionError"):
        compress(model, "slim", 0.4, toy, Budget(recovery_steps=0, slim_sparsity_steps=0, calib_images=8, latency_repeats=1, latency_warmup=0))


def test_grid_resumes_and_records_failures(tmp_path, toy):
    calls = []
    @register("_t_count", "baseline", kind="sparsity", grid=(0.3, 0.6), bounds=(0, 0.99))
    def _count(model, level, ctx):
        calls.append(level); return get_method("global_magnitude").fn(model, level, ctx)
    @register("_t_fail", "baseline", kind="sparsity", grid=(0.5,), bounds=(0, 0.99))
    def _fail(model, level, ctx): raise RuntimeError("boom")
    try:
        cells = grid_cells(["_t_count", "_t_fail"])
        models = {"tiny": TinyNet()}
        df = run_grid(models, toy, toy[:32], cells, BUDGET, tmp_path, progress=False)
        assert list(df.method) == ["none", "_t_count", "_t_count", "_t_fail"] and calls == [0.3, 0.6]
        assert list(df.applicable) == [True, True, True, False] and "boom" in df.reason.iloc[3]
        assert df.compression_ratio.iloc[2] > df.compression_ratio.iloc[1] > 1
        (tmp_path / "tiny" / "_t_count@0.6.json").unlink()                             # a run killed before this cell
        run_grid(models, toy, toy[:32], cells, BUDGET, tmp_path, progress=False)
        assert calls == [0.3, 0.6, 0.6]                                                 # only the missing cell reran
        run_grid(models, toy, toy[:32], cells, Budget(**{**BUDGET.__dict__, "recovery_steps": 1}), tmp_path, progress=False)
        assert calls == [0.3, 0.6, 0.6, 0.3, 0.6]                                       # another budget: stale cache
    finally:
        METHODS.pop("_t_count", None); METHODS.pop("_t_fail", None)


def test_macs_and_bops_of_quantised_layers(net, toy):
    from metacompress.quantize import quantize_model
    q = quantize_model(net, "ptq_minmax", 4, torch.randn(8, 3, 32, 32))
    f, r = mac_report(net), mac_report(q)
    assert r["macs"] == f["macs"] and r["w_bits"] == 4 and f["bops"] == f["macs"] * 1024
    assert f["macs"] * 16 < r["bops"] < f["macs"] * 64                                  # first/last layers at 8x8
