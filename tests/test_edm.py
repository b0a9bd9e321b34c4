"Tests of metacompress.edm (Karras et al. 2022): each pins one formula so that a deliberate break of it fails."
import math

import pytest
import torch

from metacompress.edm import (P_MEAN, P_STD, SIGMA_DATA, EDMPrecond, GaussianDenoiser, GuidedDenoiser, churn, churn_gamma,
    drop_labels, edm_loss, edm_loss_weight, edm_precond, edm_sampler, ema_beta, ema_update, evals_per_image, guided,
    has_uncond, heun_step, sample_sigma, sigma_steps, to_model_range, to_uint8)


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Spy(torch.nn.Module):
    "A denoiser that records every call (x, σ, labels) and returns c·x (an exact, simple D)."
    def __init__(self, c=0.5, label_dim=10, label_dropout=0.0):
        super().__init__()
        self.c, self.label_dim, self.label_dropout = c, label_dim, label_dropout
        self.sigma_min, self.sigma_max, self.img_resolution, self.img_channels = 0.0, math.inf, 2, 1
        self.log = []
    def round_sigma(self, s): return torch.as_tensor(s)
    def forward(self, x, sigma, class_labels=None):
        self.log.append((x.clone(), torch.as_tensor(sigma).clone(), None if class_labels is None else class_labels.clone()))
        return self.c * x.to(torch.float64)


def reference_sampler(net, z, labels, N, smin=0.002, smax=80.0, rho=7.0, S_churn=0.0, S_min=0.0, S_max=math.inf,
                      S_noise=1.0, eps=None):
    "Algorithm 2 as printed in the paper, written out plainly, with the churn noise eps[i] of step i given."
    t = [(smax ** (1 / rho) + i / (N - 1) * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho for i in range(N)] + [0.0]
    x = z.double() * t[0]
    for i in range(N):
        g = min(S_churn / N, math.sqrt(2) - 1) if S_min <= t[i] <= S_max else 0.0
        th = t[i] + g * t[i]
        xh = x + math.sqrt(th ** 2 - t[i] ** 2) * S_noise * (eps[i] if eps is not None else 0)
        d = (xh - net(xh, torch.tensor(th, dtype=torch.float64), labels).double()) / th
        x = xh + (t[i + 1] - th) * d
        if t[i + 1] != 0:
            d2 = (x - net(x, torch.tensor(t[i + 1], dtype=torch.float64), labels).double()) / t[i + 1]
            x = xh + (t[i + 1] - th) * (d / 2 + d2 / 2)
    return x


def _eps_list(N, shape, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(N)]


# --- the time grid -----------------------------------------------------------------------------------------------
def test_grid_eq5():
    t = sigma_steps(10, 0.01, 20.0, 3.0)
    ref = [(20 ** (1 / 3) + i / 9 * (0.01 ** (1 / 3) - 20 ** (1 / 3))) ** 3 for i in range(10)] + [0.0]
    assert torch.allclose(t, torch.tensor(ref, dtype=torch.float64), rtol=1e-12, atol=0)


# --- the sampler against the paper's algorithm, exactly -------------------------------------------------------
@pytest.mark.parametrize("kw", [dict(), dict(S_churn=5.0), dict(S_churn=80.0),           # 80/N > √2−1: the clamp
                                dict(S_churn=5.0, S_min=0.1, S_max=5.0),                   # the σ window
                                dict(S_churn=5.0, S_noise=1.3), dict(S_churn=5.0, S_noise=0.5, S_min=0.05, S_max=50.0)])
def test_sampler_equals_algorithm_2(kw):
    N, shape = 7, (3, 1, 2, 2)
    z = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    eps = _eps_list(N, shape, 1)
    it = iter(eps)
    net = GaussianDenoiser([0.1 * c for c in range(10)], 0.4, img_resolution=2, img_channels=1)
    labels = torch.eye(10)[[1, 5, 9]]
    x = edm_sampler(net, z, labels, num_steps=N, randn_like=lambda x: next(it), **kw)
    ref = reference_sampler(net, z, labels, N, eps=eps, **kw)
    assert torch.allclose(x, ref, rtol=1e-10, atol=1e-10)


def test_churn_noise_drawn_at_every_step():
    "Per-seed reproducibility: one ε per step whether the step churns or not (so the k-th draw is step k's)."
    draws = []
    def randn_like(x): draws.append(1); return torch.zeros_like(x)
    edm_sampler(Spy(), torch.ones(1, 1, 2, 2), num_steps=9, S_churn=3.0, S_min=1.0, S_max=2.0, randn_like=randn_like)
    assert len(draws) == 9


def test_churn_window_clamp_and_noise_seen_by_network():
    N = 6
    net = Spy(label_dim=0)
    ones = lambda x: torch.ones_like(x)
    t = sigma_steps(N, 0.002, 80.0, 7.0)
    edm_sampler(net, torch.zeros(1, 1, 2, 2), num_steps=N, S_churn=100.0, S_min=0.05, S_max=10.0, S_noise=0.7, randn_like=ones)
    # Euler calls sit at calls 0, 2, 4, ... (one Heun correction after each but the last)
    euler_sigmas = [float(net.log[2 * i][1]) for i in range(N)]
    for i in range(N):
        inside = 0.05 <= float(t[i]) <= 10.0
        expect = float(t[i]) * (1 + (math.sqrt(2) - 1 if inside else 0.0))      # the clamp: γ = √2 − 1, not 100/N
        assert math.isclose(euler_sigmas[i], expect, rel_tol=1e-12), (i, euler_sigmas[i], expect)
    # the first step is outside the window (t_0 = 80): its input is x_0 = t_0·z = 0 exactly, no noise added
    assert net.log[0][0].abs().max() == 0
    # S_noise: everything before the first churning step stays 0 (zero latents, D = x/2), so its Euler input is
    # exactly S_noise·√(t̂² − t_i²)·ε with ε = 1
    i = next(i for i in range(N) if 0.05 <= float(t[i]) <= 10.0)
    th, ti = euler_sigmas[i], float(t[i])
    x_in = net.log[2 * i][0]
    assert torch.allclose(x_in, torch.full_like(x_in, 0.7 * math.sqrt(th ** 2 - ti ** 2)), rtol=1e-10)


def test_churn_parts():
    assert churn_gamma(1.0, 10, S_churn=2.0) == pytest.approx(0.2)
    assert churn_gamma(1.0, 10, S_churn=50.0) == pytest.approx(math.sqrt(2) - 1)
    assert churn_gamma(3.0, 10, S_churn=2.0, S_min=0.5, S_max=2.0) == 0.0
    assert churn_gamma(0.3, 10, S_churn=2.0, S_min=0.5, S_max=2.0) == 0.0
    xh, th = churn(torch.zeros(2, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64), 0.25,
                   torch.ones(2, dtype=torch.float64), S_noise=3.0)
    assert th.item() == pytest.approx(2.5) and xh[0].item() == pytest.approx(3.0 * math.sqrt(2.5 ** 2 - 4))
    xs = heun_step(lambda x, t: 0.5 * x, torch.ones(1, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64),
                   torch.tensor(1.0, dtype=torch.float64))
    d1 = 0.5 / 2; x_e = 1 - d1; d2 = 0.5 * x_e / 1
    assert xs.item() == pytest.approx(1 - (d1 + d2) / 2, rel=1e-12)


# --- preconditioning (Table 1) ------------------------------------------------------------------------------------
def test_precond_values():
    s = torch.tensor([0.01, 0.3, 2.0, 50.0], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = edm_precond(s)
    r2 = s ** 2 + 0.25
    assert torch.allclose(c_skip, 0.25 / r2, rtol=1e-12) and torch.allclose(c_out, s * 0.5 / r2.sqrt(), rtol=1e-12)
    assert torch.allclose(c_in, 1 / r2.sqrt(), rtol=1e-12) and torch.allclose(c_noise, s.log() / 4, rtol=1e-12)
    assert torch.allclose(edm_loss_weight(s), r2 / (0.5 * s) ** 2, rtol=1e-12)
    assert SIGMA_DATA == 0.5


class RecF(torch.nn.Module):
    "A raw network F that records its inputs and returns a fixed pattern."
    def __init__(self): super().__init__(); self.seen = None
    def forward(self, x, c_noise, labels):
        self.seen = (x.clone(), c_noise.clone(), labels.clone()); return torch.full_like(x, 2.0)


def test_precond_wraps_F_with_its_inputs():
    f = RecF(); D = EDMPrecond(f)
    x = torch.randn(3, 3, 4, 4); sig = torch.tensor([0.1, 1.0, 7.0]); lab = torch.eye(10)[[2, 4, 6]]
    out = D(x, sig, lab)
    c_skip, c_out, c_in, c_noise = edm_precond(sig.reshape(-1, 1, 1, 1))
    assert torch.allclose(f.seen[0], c_in * x) and torch.allclose(f.seen[1], sig.log() / 4)   # F sees c_in·x and c_noise
    assert torch.equal(f.seen[2], lab)                                                        # and the labels
    assert torch.allclose(out, c_skip * x + c_out * 2.0)
    D(x, 0.5, None); assert torch.equal(f.seen[2], torch.zeros(3, 10))                       # no labels: zeros
    D(x, 0.5, lab); assert torch.allclose(f.seen[1], torch.full((3,), math.log(0.5) / 4))   # a scalar σ broadcasts


# --- the loss (Eq. 2, Table 1's P_mean, P_std) ------------------------------------------------------------------
def test_training_sigma_distribution():
    assert (P_MEAN, P_STD) == (-1.2, 1.2)
    ls = sample_sigma(200_000, generator=torch.Generator().manual_seed(0)).log()
    assert abs(ls.mean().item() + 1.2) < 0.01 and abs(ls.std().item() - 1.2) < 0.01


def test_loss_uses_table1_sigmas_and_weight():
    seen = []
    class F0(torch.nn.Module):
        def forward(self, x, c_noise, labels): seen.append(c_noise.clone()); return torch.zeros_like(x)
    y = torch.zeros(50_000, 1, 1, 1)
    l = edm_loss(EDMPrecond(F0(), label_dim=0), y, None, generator=torch.Generator().manual_seed(0))
    ln_sigma = seen[0] * 4
    assert abs(ln_sigma.mean().item() + 1.2) < 0.02 and abs(ln_sigma.std().item() - 1.2) < 0.02
    # data = 0, F = 0: D = c_skip·n, loss = λ·c_skip²·σ²·ε² -> per image exactly λ c_skip² n²
    sig = ln_sigma.exp().double()
    c_skip = 0.25 / (sig ** 2 + 0.25)
    assert l.shape == (50_000,)
    # E over ε of the loss given σ: λ c_skip² σ² = σd²/(σ² + σd²)·... check the mean against its expectation
    expect = (edm_loss_weight(sig) * c_skip ** 2 * sig ** 2).mean().item()
    assert abs(l.double().mean().item() / expect - 1) < 0.03
    l2 = edm_loss(EDMPrecond(F0(), label_dim=0), y, None, generator=torch.Generator().manual_seed(0), P_mean=0.0, P_std=0.5)
    assert abs((seen[-1] * 4).mean().item()) < 0.02 and abs((seen[-1] * 4).std().item() - 0.5) < 0.02


def test_loss_given_sigma_is_exact():
    y = torch.randn(4, 3, 2, 2); lab = torch.eye(10)[:4]
    net = EDMPrecond(RecF())
    g = torch.Generator().manual_seed(3)
    l = edm_loss(net, y, lab, generator=g, sigma=torch.tensor(0.8))
    n = torch.randn(y.shape, generator=torch.Generator().manual_seed(3)) * 0.8
    D = net(y + n, torch.tensor(0.8), lab)
    assert torch.allclose(l, (edm_loss_weight(torch.tensor(0.8)) * (D - y) ** 2).mean(dim=(1, 2, 3)), rtol=1e-5)


def test_label_dropout():
    lab = torch.eye(10).repeat(2000, 1)
    d = drop_labels(lab, 0.3, torch.Generator().manual_seed(0))
    dropped = d.sum(1) == 0
    assert abs(dropped.float().mean().item() - 0.3) < 0.02
    assert torch.equal(d[~dropped], lab[~dropped])
    assert drop_labels(lab, 0.0) is lab
    seen = []
    class F1(torch.nn.Module):
        def forward(self, x, c_noise, labels): seen.append(labels.clone()); return torch.zeros_like(x)
    edm_loss(EDMPrecond(F1()), torch.zeros(1000, 1, 1, 1), torch.eye(10)[torch.arange(1000) % 10], label_dropout=0.5,
             generator=torch.Generator().manual_seed(0))
    assert 0.4 < (seen[0].sum(1) == 0).float().mean().item() < 0.6


# --- guidance (Ho & Salimans 2022) -------------------------------------------------------------------------------
def test_guided_formula_and_one_batched_call():
    net = GaussianDenoiser([0.1 * c for c in range(10)], 0.3, img_resolution=2, img_channels=1, mu_uncond=-0.3)
    x = torch.randn(4, 1, 2, 2, dtype=torch.float64); lab = torch.eye(10)[[0, 3, 6, 9]]; s = torch.tensor(0.9)
    for w in (0.5, 2.0):
        calls = net.calls
        out = guided(net, w)(x, s, lab)
        assert net.calls - calls == 1
        assert torch.allclose(out, (1 + w) * net(x, s, lab) - w * net(x, s, torch.zeros_like(lab)), rtol=1e-12)


def test_w0_is_the_unguided_sampler_exactly():
    net = GaussianDenoiser([0.1 * c for c in range(10)], 0.3, img_resolution=2, img_channels=1, mu_uncond=0.0)
    z = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(0)); lab = torch.eye(10)[[1, 2, 3]]
    assert guided(net, 0.0) is net
    a = edm_sampler(net, z, lab, num_steps=5)
    b = edm_sampler(GuidedDenoiser(net, 0.0), z, lab, num_steps=5)     # the formula itself at w = 0
    assert torch.equal(a, b)
    assert torch.equal(a, reference_sampler(net, z, lab, 5))


def test_guidance_refusals_and_nfe():
    with pytest.raises(ValueError, match="unconditional mode"): guided(GaussianDenoiser([0.0, 1.0]), 1.0)
    with pytest.raises(ValueError, match="label_dropout"): guided(EDMPrecond(RecF()), 0.5)
    with pytest.raises(ValueError, match=">= 0"): guided(GaussianDenoiser([0.0, 1.0], mu_uncond=0.0), -1.0)
    assert has_uncond(EDMPrecond(RecF(), label_dropout=0.1)) and not has_uncond(EDMPrecond(RecF(), label_dim=0, label_dropout=0.1))
    net = GaussianDenoiser([0.0, 1.0], 0.5, img_resolution=2, img_channels=1, mu_uncond=0.5)
    edm_sampler(guided(net, 1.0), torch.zeros(2, 1, 2, 2), torch.eye(2), num_steps=6)
    assert net.calls == 11 and net.evals == 2 * 2 * 11                 # 2N − 1 calls, each on cond + uncond
    assert evals_per_image(6, 1.0) == 22 and evals_per_image(6, 0.0) == 11


def test_guided_gaussian_mean():
    "D_w of two Gaussians is the exact denoiser of N(μ_c + w(μ_c − μ_u), s²): the samples' mean moves there."
    net = GaussianDenoiser([0.0, 0.4], 0.2, img_resolution=4, img_channels=1, mu_uncond=0.1)
    z = torch.randn(64, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    x = edm_sampler(guided(net, 1.5), z, torch.eye(2)[[1]].expand(64, -1), num_steps=60)
    assert abs(x.mean().item() - (0.4 + 1.5 * 0.3)) < 0.01 and abs(x.std().item() - 0.2) < 0.01


# --- EMA and pixels ------------------------------------------------------------------------------------------------
def test_ema():
    assert ema_beta(10_000, 100, halflife_kimg=1.0) == pytest.approx(0.5 ** 0.1)
    assert ema_beta(2_000, 100, halflife_kimg=1.0, rampup=0.1) == pytest.approx(0.5 ** 0.5)
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    w0 = a.weight.detach().clone()
    ema_update(a, b, 0.9)
    assert torch.allclose(a.weight, 0.9 * w0 + 0.1 * b.weight, atol=1e-7)


def test_pixels():
    assert to_uint8(torch.tensor([-1.0, 1.0, 0.0, -5.0, 5.0])).tolist() == [0, 255, 128, 0, 255]
    px = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(to_uint8(to_model_range(px)), px)
    assert to_model_range(torch.tensor([0, 255], dtype=torch.uint8)).tolist() == [-1.0, 1.0]
