"Tests of metacompress.compress: the registry, every method on a small model, accounting, errors, the resumable grid."
import copy, math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from metacompress.compress import catalogue, compress, grid_cells
from metacompress.compress_demo import demo_fpgm, demo_slim
from metacompress.measure import accounting, conv_channels, mac_report, size_report, weight_sparsity
from metacompress.methods_unstructured import agp_sparsity
from metacompress.registry import METHODS, Budget, NotApplicable, get_method, register
from metacompress.testing import TinyNet, TinyResNetA, toy_split

pytestmark = pytest.mark.usefixtures("one_thread")

BUDGET = Budget(recovery_steps=2, batch_size=32, calib_images=32, slim_sparsity_steps=2, taylor_batches=1,
                latency_repeats=1, latency_warmup=0)
QUANT = ("ptq_minmax", "ptq_percentile", "ptq_mse", "qat_ste", "lsq", "dorefa_pact")
PRUNE_U = ("global_magnitude", "layer_magnitude", "random_unstructured", "agp")
PRUNE_S = ("l1_filter", "group_norm", "fpgm", "slim", "taylor", "random_channels")


def expected_bops(model, size=32):
    "Σ over conv/linear layers of MACs x w_bits x a_bits, written independently of mac_report."
    from metacompress.quantize import layer_bits
    macs = {}
    def hook(mod, i, o):
        k = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1] if isinstance(mod, nn.Conv2d) else mod.in_features
        macs[mod] = o[0].numel() * k
    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad(): model.eval()(torch.zeros(1, 3, size, size))
    for h in hs: h.remove()
    return sum(n * layer_bits(m)[0] * layer_bits(m)[1] for m, n in macs.items())


def test_macs_of_grouped_convs():
    dw = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2))
    assert mac_report(dw)["macs"] == 32 * 32 * 8 * 3 + 32 * 32 * 8 * 9 + 16 * 16 * 16 * 4 * 9


def test_quantised_layer_size_formula():
    from metacompress.quantize import quantize_model
    lin = nn.Sequential(nn.Linear(16, 8), nn.Linear(8, 8), nn.Linear(8, 4))
    q = quantize_model(lin, "ptq_minmax", 4, torch.randn(4, 16), keep_first_last=None)
    # per layer: weights at 4 bits + 32-bit scale per output channel + 64 bits input scale/zero point + 32-bit bias
    want = sum(o * i * 4 + 32 * o + 64 + 32 * o for i, o in ((16, 8), (8, 8), (8, 4)))
    assert size_report(q)["size_bytes"] == math.ceil(want / 8)


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
    cat = catalogue()
    assert len(cat) >= 23 and {"agp", "bwn", "mixed_lsq"} <= set(cat.method)
    assert (cat.granularity != "").all() and (cat.criterion != "").all()


ALL = sorted({n for n in METHODS if not n.startswith("_")} | set(QUANT))

@pytest.mark.parametrize("method", ALL)
def test_every_method_on_a_small_model(method, net, toy, base):
    m = get_method(method)
    level = (4 if 4 in m.grid else m.grid[0]) if m.kind == "bits" else m.grid[min(1, len(m.grid) - 1)]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    out, rep = compress(net, method, level, toy, BUDGET, eval_split=toy[:32], base=base, name="tiny")
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())      # the input is untouched
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad(): assert out(x).shape == (3, 10)
    assert rep["applicable"] and rep["method"] == method and 0 <= rep["test_acc"] <= 1 and rep["eval_n"] == 32
    assert rep["latency_b1_ms"] > 0 and rep["latency_b64_ms"] > 0 and rep["seconds"] > 0
    tol = {"sparsity": 0.01, "channel_fraction": 0.15 if method == "l1+ptq8" else 0.06, "bits": 0, "rank_ratio": 0.05, "none": 0}[m.kind]
    if method == "mixed_lsq": tol = 0.6                                                  # first/last layers stay at 8 bits
    if rep.get("structure") == "block_internal": assert 0 < rep["achieved"] <= level + tol, (rep["achieved"], level)   # the stream convs are kept
    else: assert abs(rep["achieved"] - level) <= tol, (rep["achieved"], level)
    if m.kind == "bits" and method not in ("bwn", "mixed_lsq"): assert (rep["w_bits"], rep["a_bits"]) == (4, 4) and rep["runtime"] == "fake-quant"
    if method == "bwn": assert (rep["w_bits"], rep["a_bits"]) == (1, 8) and rep["bops"] < base["macs"] * 8 * 3
    if m.family != "baseline": assert rep["compression_ratio"] > 1.2, rep["compression_ratio"]
    assert rep["recovery_steps"] == BUDGET.recovery_steps                                # equal training, baseline included
    assert rep["granularity"] == m.granularity and rep["criterion"] == m.criterion
    assert rep["bops"] == expected_bops(out), (rep["bops"], expected_bops(out))         # per-layer w_bits x a_bits
    assert rep["seconds_compress"] >= 0 and rep["seconds_recovery"] >= 0


def test_structured_pruning_removes_params_and_macs():
    import torch_pruning as tp
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    macs0, params0 = tp.utils.count_ops_and_params(model, x)
    out, rep = compress(model, "group_norm", 0.4, toy_split(64), Budget(recovery_steps=0, calib_images=8, latency_repeats=1, latency_warmup=0))
    macs1, params1 = tp.utils.count_ops_and_params(out, x)
    # each coupled group keeps 60% of its channels: weights of a conv shrink to ~0.6 x 0.6
    assert 0.30 < params1 / params0 < 0.42 and 0.30 < macs1 / macs0 < 0.42, (params1 / params0, macs1 / macs0)
    assert rep["params"] == params1 and abs(rep["macs"] / macs1 - 1) < 0.03
    assert abs(rep["achieved"] - 0.4) < 0.02
    assert out.fc.out_features == 10 and conv_channels(out)["conv1"] == round(64 * 0.6)


@pytest.mark.parametrize("method", ["l1_filter", "fpgm", "l1+ptq8"])
def test_filter_pruning_keeps_the_residual_stream(method):
    "Li et al. 2017 (Sec. 4.2) prune only inside residual blocks: every conv that writes the stream keeps its channels."
    model = torchvision.models.resnet18(num_classes=10).eval()
    out, rep = compress(model, method, 0.4, toy_split(64), Budget(recovery_steps=0, calib_images=8, latency_repeats=1, latency_warmup=0))
    ch = conv_channels(out); want = conv_channels(model)
    assert rep["structure"] == "block_internal" and ch["conv1"] == 64, (rep["structure"], ch["conv1"])
    for b in ("layer1.0", "layer2.0", "layer3.1", "layer4.1"):
        assert ch[f"{b}.conv2"] == want[f"{b}.conv2"], b                               # writes the stream: whole
        assert ch[f"{b}.conv1"] < want[f"{b}.conv1"], b                                # inside the block: pruned
    assert ch["layer2.0.downsample.0"] == 128 and rep["achieved"] < 0.4


@pytest.mark.parametrize("method", PRUNE_U)
def test_unstructured_keeps_macs_and_shrinks_size(method, net, toy, base):
    out, rep = compress(net, method, 0.9, toy, BUDGET, base=base)
    assert rep["macs"] == base["macs"] and rep["bops"] == base["bops"] and rep["params"] == base["params"]
    assert abs(rep["sparsity"] - 0.9) < 0.01 and rep["nonzero_params"] < 0.2 * base["params"]
    assert rep["sparse_tensors"] > 0 and rep["size_bytes"] < 0.45 * base["size_bytes"]
    assert not any(hasattr(m, "weight_orig") for m in out.modules())                   # masks made permanent


def test_global_magnitude_keeps_the_largest_weights(net, toy, base):
    out, _ = compress(net, "global_magnitude", 0.7, toy, Budget(recovery_steps=0, calib_images=8, latency_repeats=1, latency_warmup=0), base=base)
    w0 = torch.cat([m.weight.detach().abs().flatten() for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))])
    w1 = torch.cat([m.weight.detach().flatten() for m in out.modules() if isinstance(m, (nn.Conv2d, nn.Linear))])
    assert w0[w1 == 0].max() <= w0[w1 != 0].min()                                      # one global threshold on |w|


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


@pytest.mark.parametrize("method", ALL)
def test_every_method_on_an_option_a_cifar_resnet(method, toy):
    "Option-A (zero-padded) shortcuts and an input-adapter first module, like the zoo's CIFAR models: applies or says why."
    m = get_method(method); level = m.grid[0]
    model = TinyResNetA().eval(); data = toy_split(64, size=24)                         # image size from the data
    try: out, rep = compress(model, method, level, data, Budget(recovery_steps=1, batch_size=16, calib_images=16,
                             slim_sparsity_steps=1, latency_repeats=1, latency_warmup=0), name="resnet_a")
    except NotApplicable as e: pytest.fail(f"{method} not applicable on an option-A ResNet: {e}")
    with torch.no_grad(): assert out(data.inputs(slice(0, 2))).shape == (2, 10)
    if m.kind == "channel_fraction": assert rep["structure"] in ("block_internal", "dependency_graph") and rep["achieved"] > 0.05
    assert rep["macs"] < mac_report(model, 32)["macs"]                                # measured at 24x24


def test_a_bug_inside_a_method_stops_the_run(net, toy, base):
    @register("_t_bug", "baseline", kind="sparsity", grid=(0.5,), bounds=(0, 0.99), granularity="weight", criterion="bug")
    def _bug(model, level, ctx): raise KeyError("a bug in project code")
    try:
        with pytest.raises(KeyError, match="a bug"): compress(net, "_t_bug", 0.5, toy, BUDGET, base=base)
        from metacompress.compress import probe_applicability
        with pytest.raises(KeyError): probe_applicability({"tiny": net}, ["_t_bug"], progress=False)
    finally: METHODS.pop("_t_bug", None)


def test_slim_shrinks_gamma_and_changes_the_pruned_set(toy):
    torch.manual_seed(0)
    b = Budget(recovery_steps=8, batch_size=32, lr=0.05, slim_sparsity_steps=8, calib_images=16, slim_shrink=0.3)
    df, _ = demo_slim(TinyResNetA().eval(), toy, b, level=0.4)
    r = df.set_index("setting")
    assert r.loc["lambda=strong", "lambda"] > 100 * b.slim_l1                       # raised to reach the total pull
    assert r.loc["lambda=strong", "mean"] < 0.8 * r.loc["lambda=0", "mean"], r     # gamma measurably shrinks
    assert r.loc["lambda=strong", "frac_below_1e-1"] > r.loc["lambda=0", "frac_below_1e-1"]
    assert r.loc["lambda=strong", "pruned_jaccard_vs_lambda0"] < 0.9, r            # another channel set
    _, rep = compress(TinyResNetA().eval(), "slim", 0.4, toy, b)
    assert rep["slim_l1"] == r.loc["lambda=strong", "lambda"] and rep["sparsity_steps"] == 8


def test_slim_uses_one_global_threshold_on_gamma(toy):
    "Liu et al. 2017: one threshold over all |gamma| (no per-group normalisation): a layer of tiny gammas loses most channels."
    model = TinyResNetA().eval()
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, nn.BatchNorm2d): bn.weight.uniform_(0.5, 1.0)
        model.layers[1].bn1.weight.uniform_(0.01, 0.02)
    out, rep = compress(model, "slim", 0.25, toy, Budget(recovery_steps=0, slim_sparsity_steps=0, calib_images=8, latency_repeats=1, latency_warmup=0))
    # 25% of the 112 block-internal channels is 28: a per-layer ratio would take 8 of layer 1's 32, one threshold ~28
    assert out.layers[1].conv1.out_channels <= 8, (out.layers[1].conv1.out_channels, rep["structure"])


class _IdentityResNet(nn.Module):
    "One residual block with an identity (unpadded) shortcut: Torch-Pruning can prune its residual stream."
    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.conv1, self.bn1 = nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.head = nn.Linear(16, 10)
    def forward(self, x):
        s = F.relu(self.bn0(self.stem(x)))
        s = F.relu(s + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(s))))))
        return self.head(F.adaptive_avg_pool2d(s, 1).flatten(1))


def test_slim_never_prunes_the_residual_stream(toy):
    "Liu et al. 2017 prune inside blocks: stream gammas scale the branch, not the skip path, so tiny ones must not remove it."
    torch.manual_seed(0); model = _IdentityResNet().eval()
    with torch.no_grad():
        model.bn1.weight.uniform_(0.5, 1.0)
        for bn in (model.bn0, model.bn2): bn.weight.uniform_(0.01, 0.02)      # the stream looks unimportant by gamma
    out, rep = compress(model, "slim", 0.2, toy, Budget(recovery_steps=0, slim_sparsity_steps=0, calib_images=8, latency_repeats=1, latency_warmup=0))
    assert out.stem.out_channels == 16 and out.conv2.out_channels == 16, (out.stem.out_channels, rep["structure"])
    assert out.conv1.out_channels < 16 and rep["structure"] == "block_internal"


def test_fpgm_and_taylor_choose_other_channels_than_l1():
    torch.manual_seed(0)
    fd = demo_fpgm(TinyResNetA(n=2)).set_index("setting")
    assert fd.loc["fpgm_vs_l1", "jaccard_mean"] < 0.8, fd
    assert fd.loc["fpgm_vs_fpgm_abs2", "jaccard_mean"] < 1.0                             # raw filters, not |w|^2
    toy = toy_split(64); b = Budget(recovery_steps=0, calib_images=16, batch_size=32, latency_repeats=1, latency_warmup=0)
    kept = {meth: [m.weight.detach().clone() for m in compress(TinyNet().eval(), meth, 0.5, toy, b)[0].modules()
                   if isinstance(m, nn.Conv2d)] for meth in ("l1_filter", "taylor")}
    torch.manual_seed(0)
    assert any(a.shape != c.shape or not torch.equal(a, c) for a, c in zip(kept["l1_filter"], kept["taylor"]))


def test_fpgm_removes_the_filters_nearest_the_geometric_median():
    "He et al. 2019, eq. 3-6 on raw filters: the kept filters are those with the largest sum of distances to the others."
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 4, 1), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    w = net[0].weight.detach().flatten(1).clone()
    score = torch.cdist(w[None], w[None])[0].sum(0)
    out, _ = compress(net, "fpgm", 0.25, toy_split(16, size=8), Budget(recovery_steps=0, calib_images=4, latency_repeats=1, latency_warmup=0))
    kept = sorted(int((w - r).abs().sum(1).argmin()) for r in out[0].weight.detach().flatten(1))
    assert kept == sorted(score.argsort(descending=True)[:12].tolist())


def test_int8_is_faster_than_fused_fp32_where_it_should_be(toy):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    with torch.no_grad():
        model.train(); model(torch.randn(16, 3, 32, 32)); model.eval()
    _, rep = compress(model, "ptq_minmax", 8, toy, Budget(recovery_steps=0, calib_images=32, latency_repeats=5, latency_warmup=2))
    assert rep["runtime"] == "int8-x86" and rep["int8_ranges"] == "minmax"
    assert rep["latency_b64_ms"] < rep["latency_fp32_b64_ms"], (rep["latency_b64_ms"], rep["latency_fp32_b64_ms"])


def test_agp_schedule():
    assert agp_sparsity(0, 10, 0.9) == 0 and agp_sparsity(10, 10, 0.9) == 0.9 and agp_sparsity(20, 10, 0.9) == 0.9
    assert abs(agp_sparsity(5, 10, 0.8) - 0.8 * (1 - 0.5 ** 3)) < 1e-12                # eq. 1 at t = n/2


def test_mixed_precision_bits_follow_the_layers(net, toy, base):
    from metacompress.quantize import layer_bits
    out, rep = compress(net, "mixed_lsq", 3, toy, BUDGET, base=base)
    bits = [layer_bits(m) for m in out.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len({b for b in bits[1:-1]}) >= 1 and all(w == a for w, a in bits)
    macs = {}
    hooks = [m.register_forward_hook(lambda mod, i, o: macs.__setitem__(mod, o[0].numel() * (mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1] if isinstance(mod, nn.Conv2d) else mod.in_features)))
             for m in out.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad(): out(torch.zeros(1, 3, 32, 32))
    for h in hooks: h.remove()
    assert rep["bops"] == sum(n * layer_bits(m)[0] * layer_bits(m)[1] for m, n in macs.items())


def test_torch_pruning_failure_is_not_applicable(toy):
    # ShuffleNetV2's channel split/shuffle makes Torch-Pruning 1.6 divide by zero: a reported pair, not a crash
    model = torchvision.models.shufflenet_v2_x1_0(num_classes=10).eval()
    with pytest.raises(NotApplicable, match="ZeroDivisionError"):
        compress(model, "slim", 0.4, toy, Budget(recovery_steps=0, slim_sparsity_steps=0, calib_images=8, latency_repeats=1, latency_warmup=0))


def test_macs_and_bops_of_quantised_layers(net, toy):
    from metacompress.quantize import quantize_model
    q = quantize_model(net, "ptq_minmax", 4, torch.randn(8, 3, 32, 32))
    f, r = mac_report(net), mac_report(q)
    assert r["macs"] == f["macs"] and r["w_bits"] == 4 and f["bops"] == f["macs"] * 1024
    assert f["macs"] * 16 < r["bops"] < f["macs"] * 64                                  # first/last layers at 8x8


def test_float_models_are_timed_with_batchnorm_folded(toy, monkeypatch):
    "The float reference of an int8 model, and every float model, is timed as deployed: BatchNorm folded into convs."
    import metacompress.measure as M
    timed = []
    monkeypatch.setattr(M, "measure_latency", lambda m, b, *a, **k: timed.append(m) or 1.0)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    _, rep = compress(model, "ptq_minmax", 8, toy, Budget(recovery_steps=0, calib_images=32, latency_repeats=1, latency_warmup=0))
    assert rep["runtime"] == "int8-x86" and len(timed) == 6          # the base, the int8 model, its float reference (b1, b64)
    has_bn = lambda m: any(isinstance(x, nn.BatchNorm2d) for x in m.modules())
    assert has_bn(model) and not any(has_bn(m) for m in timed)
    timed.clear(); accounting(model, repeats=1, warmup=0)
    assert len(timed) == 2 and not any(has_bn(m) for m in timed)


def test_ptq_correction_needs_a_clear_win():
    "A corrected PTQ model replaces the calibrated one only when lower by more than one paired standard error."
    from metacompress.recovery import clearly_lower
    old = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0])
    assert not clearly_lower(old - torch.tensor([0.1, -0.1, 0.1, -0.1, 0.02]), old)    # mean gain 0.004, SE ~0.04
    assert clearly_lower(old - torch.tensor([0.10, 0.12, 0.09, 0.11, 0.10]), old)
    assert not clearly_lower(old + 0.1, old) and not clearly_lower(old, old)
    assert not clearly_lower(old[:1] - 1, old[:1])                                       # one image: no error bar
