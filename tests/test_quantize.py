"Heavier checks of metacompress.quantize on torchvision classifiers (the fast ones live in nbs/04a_quantize.ipynb)."
import copy, math

import pytest
import torch
import torch.nn as nn
import torchvision

from metacompress.quantize import (LSQQuantizer, UniformQuantizer, qrange, QUANT_SCHEMES, VALID_BITS, QuantConv2d, QuantLinear, check_quantized,
    deploy_int8, fake_quant_twin_int8, int8_modules, layer_bits, logit_error, quant_summary, quantize_model,
    quantized_weight)

ARCHS = ("resnet18", "mobilenet_v2", "mobilenet_v3_small", "shufflenet_v2_x1_0", "regnet_x_400mf", "densenet121")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    "Small tensor ops are many times faster on one thread when the 2 cores are shared; restore afterwards."
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def warmed(arch: str, seed: int = 0) -> nn.Module:
    "A random-init torchvision classifier (10 classes) whose batch norms saw a few batches (else logits are ~1e-10)."
    torch.manual_seed(seed)
    m = getattr(torchvision.models, arch)(num_classes=10).train()
    with torch.no_grad():
        for _ in range(3): m(torch.randn(16, 3, 32, 32))
    return m.eval()


@pytest.fixture(scope="module")
def mnv3():
    return warmed("mobilenet_v3_small")


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 3, 32, 32, generator=g)


@pytest.mark.parametrize("scheme", sorted(QUANT_SCHEMES))
def test_every_bit_width_on_mobilenet_v3_small(mnv3, batch, scheme):
    for bits in VALID_BITS:
        qm = quantize_model(mnv3, scheme, bits, batch)
        rows = quant_summary(qm)
        assert len(rows) == 54 and all(r["type"].startswith("Quant") for r in rows)
        assert (rows[0]["w_bits"], rows[-1]["w_bits"]) == (8, 8)                # stem conv and classifier
        assert all(r["w_bits"] == bits and r["a_bits"] == bits for r in rows[1:-1])
        assert check_quantized(qm, batch) == 54                                  # <= 2^b levels everywhere
        qm.train()
        out = qm(batch[:4])
        assert out.shape == (4, 10) and torch.isfinite(out).all()
        out.logsumexp(1).mean().backward()
        learned = [n for n, p in qm.named_parameters() if n.endswith(("step", "alpha"))]
        assert bool(learned) == (scheme in ("lsq", "dorefa_pact"))
        for n, p in qm.named_parameters():
            if n.endswith("weight") and "a_quant" not in n and not n.endswith("w_quant.weight"):
                assert p.grad is not None, (scheme, bits, n)
        assert all(dict(qm.named_parameters())[n].grad is not None for n in learned)


def test_recovery_sgd_moves_quantizer_parameters(mnv3, batch):
    "The compress step fine-tunes with plain SGD over model.parameters(): LSQ steps and PACT clips must move."
    for scheme, suffix in (("lsq", "step"), ("dorefa_pact", "alpha")):
        qm = quantize_model(mnv3, scheme, 3, batch).train()
        before = {n: p.detach().clone() for n, p in qm.named_parameters() if n.endswith(suffix)}
        opt = torch.optim.SGD(qm.parameters(), lr=0.1)
        nn.functional.cross_entropy(qm(2 * batch), torch.arange(8) % 10).backward(); opt.step()
        moved = sum(not torch.equal(p.detach(), before[n]) for n, p in qm.named_parameters() if n in before)
        assert moved >= len(before) // 2, (scheme, moved, len(before))


def test_state_dict_round_trip(mnv3, batch):
    qm = quantize_model(mnv3, "lsq", 4, batch)
    with torch.no_grad():
        for p in qm.parameters(): p.mul_(1.01)
    other = quantize_model(mnv3, "lsq", 4, batch)
    other.load_state_dict(qm.state_dict())
    with torch.no_grad(): assert torch.equal(other.eval()(batch), qm.eval()(batch))


@pytest.mark.parametrize("scheme", ["ptq_minmax", "ptq_percentile", "ptq_mse"])
def test_ptq_error_grows_as_bits_shrink(mnv3, batch, scheme):
    errs = {b: logit_error(mnv3, quantize_model(mnv3, scheme, b, batch, keep_first_last=None), batch) for b in (8, 4, 2)}
    assert errs[8] < 0.05 and errs[8] < errs[4] < errs[2] and errs[2] > 5 * errs[8], errs


@pytest.mark.parametrize("arch", ARCHS)
def test_torchvision_archs(arch, batch):
    m = warmed(arch)
    qm = quantize_model(m, "lsq", 4, batch)
    n_layers = sum(isinstance(x, (nn.Conv2d, nn.Linear)) for x in m.modules())
    quant = [x for x in qm.modules() if isinstance(x, (QuantConv2d, QuantLinear))]
    assert len(quant) == n_layers and all(isinstance(x, (nn.Conv2d, nn.Linear)) for x in quant)
    assert sum(layer_bits(x) == (8, 8) for x in quant) == 2
    grouped = [x for x in quant if isinstance(x, nn.Conv2d) and x.groups > 1]
    for x in grouped: assert max(len(r.unique()) for r in quantized_weight(x).reshape(x.out_channels, -1)) <= 16
    out = qm.train()(batch[:4]); out.sum().backward()
    assert out.shape == (4, 10)
    int8 = deploy_int8(m, batch)
    assert len(int8_modules(int8)) >= n_layers - 2      # (a few tiny layers may stay float in FX's patterns)
    with torch.no_grad(): y8, y = int8(batch), m(batch)
    assert y8.shape == (8, 10) and (y8 - y).norm() / y.norm() < 0.25, float((y8 - y).norm() / y.norm())


def test_int8_matches_its_fake_quant_twin(batch):
    m = warmed("resnet18")
    calib = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    int8, twin = deploy_int8(m, calib), fake_quant_twin_int8(m, calib)
    names = int8_modules(int8)
    assert len(names) == 21 and int8_modules(twin) == []                        # 20 convs + fc hold qint8
    kinds = {type(x).__module__ + "." + type(x).__name__ for x in int8.modules()}
    assert "torch.ao.nn.intrinsic.quantized.modules.conv_relu.ConvReLU2d" in kinds, kinds   # conv+bn+relu fused, int8
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad(): y8, yt, y = int8(x), twin(x), m(x)
    assert (y8 - yt).norm() / yt.norm() < 0.05                                  # (measured: 0.018)
    assert (y8 - yt).norm() < 0.5 * (y8 - y).norm()                             # closer to its twin than to fp32 (0.14)
    assert (y8.argmax(1) == yt.argmax(1)).float().mean() >= 0.9
    assert m.training is False and not int8_modules(m)                          # the float model is untouched


def test_errors_name_the_valid_values(mnv3, batch):
    with pytest.raises(ValueError, match="lsq"): quantize_model(mnv3, "binary", 4, batch)
    with pytest.raises(ValueError, match=r"\(8, 6, 4, 3, 2\)"): quantize_model(mnv3, "lsq", 1, batch)
    with pytest.raises(ValueError, match=r"\(8, 6, 4, 3, 2\)"): quantize_model(mnv3, "lsq", 16, batch)
    with pytest.raises(ValueError, match="a_bits"): quantize_model(mnv3, "lsq", 4, batch, a_bits=5)


def test_fused_eval_path_matches_the_autograd_path():
    "Evaluation without autograd uses torch's fused kernels: the same values (up to a last-ulp tie), zero points included."
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 8, 3, 3, generator=g) * torch.rand(16, 1, 1, 1, generator=g)
    act, signed = torch.relu(torch.randn(8, 8, 6, 6, generator=g)) * 3, torch.randn(8, 8, 6, 6, generator=g) - 0.7
    cases = [(UniformQuantizer(6, method="mse", symmetric=True, per_channel=True, channels=16), w),
             (UniformQuantizer(4, method="minmax", symmetric=False), signed),       # a zero point
             (UniformQuantizer(8, method="percentile", symmetric=False), act),
             (LSQQuantizer(4, signed=True, per_channel=True, channels=16), w), (LSQQuantizer(3, signed=None), act)]
    for q, x in cases:
        q(x); q.eval()
        slow = q.quantize(x).detach()
        with torch.no_grad(): fast = q(x)
        step = (q.scale if hasattr(q, "scale") else q.step.detach()).max()
        assert (slow != fast).float().mean() < 1e-3 and (slow - fast).abs().max() <= step * 1.001, q


def test_lsq_mse_init_keeps_heavy_tailed_weights():
    "LSQ's paper init clips at 2·sqrt(Q_P)·<|w|>: a channel of tiny weights with a few large ones loses them; the MSE init keeps them."
    g = torch.Generator().manual_seed(1)
    w = 1e-3 * torch.randn(4, 64, 3, 3, generator=g); w[:, 0, 0, 0] = torch.tensor([1.0, -0.8, 0.6, 1.2])
    err = {}
    for init in ("paper", "mse"):
        q = LSQQuantizer(8, signed=True, per_channel=True, channels=4, init=init); q(w)
        err[init] = float(((q.quantize(w) - w) ** 2).sum())
        if init == "paper":
            torch.testing.assert_close(q.step.detach(), 2 * w.flatten(1).abs().mean(1) / math.sqrt(qrange(8, True)[1]))
    assert err["mse"] < 0.05 * err["paper"], err
    with pytest.raises(ValueError, match="mse"): LSQQuantizer(4, init="lsq+")


def test_dynamic_ranges_follow_the_weight_in_evaluation_too():
    "qat_ste's weight quantiser recomputes its range from the current weight: the fused evaluation path must not reuse a stale one."
    w = torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(2))
    q = UniformQuantizer(4, symmetric=True, per_channel=True, channels=8, dynamic=True); q(w); q.eval()
    w2 = 3 * w                                          # the weight after training steps moved it
    with torch.no_grad(): got = q(w2)
    torch.testing.assert_close(got, q.quantize(w2).detach())
    assert (got - w2).abs().max() <= (w2.flatten(1).abs().max(1).values / 7).max() / 2 + 1e-6   # within half a step of the new range
