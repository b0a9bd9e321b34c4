"Numerical and file tests of metacompress.generate (the EDM sampler, preconditioning, networks, dataset, CLI)."
import math, pickle, sys, textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from metacompress.core import step_params, load_torch
import metacompress.generate as gen
from metacompress.data import CIFAR10_MEAN, CIFAR10_STD, Split, load_splits
from metacompress.generate import (GaussianDenoiser, EDMPrecond, TinyUNet, build_edm, best_classifier, choose_guidance,
    edm_precond, edm_loss_weight, edm_quality, edm_sampler, edm_eval_loss, frechet_distance, generate_dataset,
    generate_images, has_uncond, load_edm_pickle, pick_guidance, load_local_edm, main, parse_seeds, sigma_steps, to_uint8, train_edm, SIGMA_DATA)


@pytest.fixture(autouse=True)
def one_thread():
    # These tensors are small: on a shared 2-core machine a second OpenMP thread only adds waiting.
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --- the sampler against the exactly solvable Gaussian case ------------------------------------------------------
@pytest.mark.parametrize("mu,s", [(0.0, 0.5), (0.3, 0.2), (-0.5, 1.0), (0.1, 2.0)])
def test_heun_gaussian_moments(mu, s):
    "Data ~ N(mu, s²): deterministic Heun from N(0, σmax²) gives mean mu and std s (converged N, many samples)."
    g = torch.Generator().manual_seed(1)
    net = GaussianDenoiser(mu, s)
    x = edm_sampler(net, torch.randn(32, 3, 32, 32, generator=g), num_steps=144)
    test_n = x.numel()
    assert net.calls == 2 * 144 - 1
    mean_bias = mu * s / math.hypot(s, 80)           # the only bias: the N(0, σmax²) start ignores mu
    assert abs(x.mean().item() - (mu - mean_bias)) < 4 * s / math.sqrt(test_n)
    assert abs(x.std().item() / s - 1) < 0.006
    assert abs(x.mean().item() - mu) < 0.01


def test_nfe_default_and_euler_last_step():
    net = GaussianDenoiser(0.0, 0.5)
    x = edm_sampler(net, torch.randn(2, 3, 4, 4))
    assert net.calls == 35                            # N = 18 -> 2N - 1
    for n in (1, 2, 7):
        net = GaussianDenoiser(0.0, 0.5); edm_sampler(net, torch.randn(1, 1, 2, 2), num_steps=n)
        assert net.calls == 2 * n - 1


def test_heun_is_second_order():
    "The error of the std gain falls ~4x per doubling of N (Heun), not ~2x (Euler)."
    errs = [edm_sampler(GaussianDenoiser(0.0, 0.5), torch.ones(1, 1, 1, 1), num_steps=n).item() / 0.5 - 1
            for n in (18, 36, 72, 144)]
    ratios = [b / a for a, b in zip(errs, errs[1:])]
    assert all(0.15 < r < 0.3 for r in ratios), (errs, ratios)
    assert abs(errs[-1]) < 1e-3


def test_schedule_float64_and_clamped():
    t = sigma_steps(18, 0.002, 80, 7)
    assert t.dtype == torch.float64 and t[-1] == 0 and len(t) == 19
    i = torch.arange(18, dtype=torch.float64)
    ref = (80 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert torch.allclose(t[:-1], ref, rtol=1e-12)
    class Net: sigma_min, sigma_max = 0.01, 20.0
    t = sigma_steps(18, 0.002, 80, 7, Net())
    assert math.isclose(t[0].item(), 20.0) and math.isclose(t[-2].item(), 0.01)


# --- per-seed determinism ---------------------------------------------------------------------------------------
def test_seed_alone_equals_seed_in_batch_unet():
    torch.manual_seed(0)
    net = build_edm(dict(channels=8, mults=(1, 2), blocks=1, attn=True), img_resolution=16)
    for p in net.parameters(): p.data.normal_(0, 0.2)  # a non-trivial F, not the zero-initialised one
    kw = dict(num_steps=5, device="cpu", progress=False, S_churn=5, S_min=0.05, S_max=20)
    xa, ya = generate_images(net, "0-9", batch=10, **kw)
    xb, yb = generate_images(net, [6], batch=1, **kw)
    xc, yc = generate_images(net, "4-9", batch=4, **kw)
    assert torch.equal(xa[6], xb[0]) and torch.equal(xa[6], xc[2])
    assert ya[6] == yb[0] == yc[2]
    assert xa.float().std() > 10                      # the images are not constant
    assert not torch.equal(xa[5], xa[6])              # and seeds differ


def test_seed_determines_class_and_churn():
    net = GaussianDenoiser([0.1 * c - 0.5 for c in range(10)], 0.3, img_resolution=4)
    kw = dict(num_steps=4, S_churn=20, device="cpu", progress=False)
    _, y1 = generate_images(net, "0-49", batch=7, **kw)
    _, y2 = generate_images(net, "0-49", batch=50, **kw)
    assert torch.equal(y1, y2) and len(y1.unique()) > 5
    x1, _ = generate_images(net, [3], batch=1, **kw)
    x2, _ = generate_images(net, [3], batch=1, **{**kw, "S_churn": 0})
    assert not torch.equal(x1, x2)                    # churn does add (per-seed) noise


def test_parse_seeds_errors():
    assert parse_seeds("0-2,7") == [0, 1, 2, 7]
    for bad in ("1-", "x", "3-1", "-4", "1..3"):
        with pytest.raises(ValueError, match="bad seed range"): parse_seeds(bad)


def test_unknown_class():
    with pytest.raises(ValueError, match="unknown class index"):
        generate_images(GaussianDenoiser([0.0] * 10, 0.5), "0", class_idx=10, progress=False)


# --- preconditioning ------------------------------------------------------------------------------------------
def test_preconditioning_properties():
    class AnyF(torch.nn.Module):
        def forward(self, x, c_noise, labels): return torch.randn_like(x) * 1e3 + c_noise.reshape(-1, 1, 1, 1) * 7
    D = EDMPrecond(AnyF()); x = torch.randn(8, 3, 8, 8)
    for s in (1e-6, 1e-8):
        assert (D(x, s) - x).abs().max() < 1e4 * s    # D -> x as σ -> 0, whatever F (|F| < 1e4 here)
    sig = torch.logspace(-4, 3, 200, dtype=torch.float64)
    _, c_out, _, _ = edm_precond(sig)
    assert torch.allclose(edm_loss_weight(sig) * c_out ** 2, torch.ones_like(sig), rtol=1e-12)
    g = torch.Generator().manual_seed(0)
    y = torch.randn(400_000, dtype=torch.float64, generator=g) * SIGMA_DATA
    for s in (0.002, 0.05, 0.5, 3.0, 80.0):
        n = torch.randn(400_000, dtype=torch.float64, generator=g) * s
        c_skip, c_out, c_in, _ = edm_precond(torch.tensor(s, dtype=torch.float64))
        assert abs(((y - c_skip * (y + n)) / c_out).var().item() - 1) < 0.01
        assert abs((c_in * (y + n)).var().item() - 1) < 0.01


# --- official pickles, through a fake EDM checkout -------------------------------------------------------------
FAKE_NET = '''
import math, torch
import dnnlib  # noqa: F401  (official pickles need NVlabs/edm's packages importable)

class TinyEDM(torch.nn.Module):
    "Stands in for an official network: the same interface, an exact Gaussian denoiser."
    def __init__(self):
        super().__init__()
        self.sigma_min, self.sigma_max, self.label_dim = 0.002, 80.0, 10
        self.img_resolution, self.img_channels = 8, 3
        self.register_buffer("mu", torch.linspace(-0.5, 0.4, 10))
    def round_sigma(self, sigma): return torch.as_tensor(sigma)
    def forward(self, x, sigma, class_labels=None, **kw):
        mu = (class_labels.float() @ self.mu).reshape(-1, 1, 1, 1)
        sigma = torch.as_tensor(sigma, dtype=torch.float32).reshape(-1, 1, 1, 1)
        return (mu + 0.09 / (0.09 + sigma ** 2) * (x.float() - mu)).float()
'''

@pytest.fixture
def fake_edm(tmp_path, monkeypatch):
    "A fake NVlabs/edm checkout and a pickle {'ema': net} made with it; afterwards neither is importable."
    repo = tmp_path / "edm"
    (repo / "dnnlib").mkdir(parents=True); (repo / "dnnlib" / "__init__.py").write_text("")
    (repo / "torch_utils").mkdir(); (repo / "torch_utils" / "__init__.py").write_text("")
    (repo / "torch_utils" / "fake_networks_mc.py").write_text(textwrap.dedent(FAKE_NET))
    monkeypatch.setattr(sys, "path", [str(repo)] + list(sys.path))
    from torch_utils.fake_networks_mc import TinyEDM
    pkl = tmp_path / "edm-fake.pkl"
    with open(pkl, "wb") as f: pickle.dump({"ema": TinyEDM(), "augment_pipe": None}, f)
    def forget():
        for m in [m for m in sys.modules if m.split(".")[0] in ("dnnlib", "torch_utils")]: del sys.modules[m]
    forget(); sys.path.remove(str(repo))
    yield repo, pkl
    forget()


def test_pickle_needs_checkout_then_loads(fake_edm):
    repo, pkl = fake_edm
    with pytest.raises(ModuleNotFoundError, match="--edm-repo"), pytest.warns(UserWarning, match="runs code"):
        load_edm_pickle(pkl)
    with pytest.warns(UserWarning, match="runs code"):
        net = load_edm_pickle(pkl, edm_repo=repo)
    assert net.label_dim == 10 and net.img_resolution == 8
    x, y = generate_images(net, "0-3", class_idx=9, batch=4, device="cpu", progress=False)
    assert x.shape == (4, 3, 8, 8) and (y == 9).all()
    assert abs(x.float().mean().item() - (0.4 * 127.5 + 127.5)) < 6


def test_pickle_errors(tmp_path, fake_edm):
    repo, pkl = fake_edm
    with pytest.raises(FileNotFoundError, match="edm_repo"):
        load_edm_pickle(pkl, edm_repo=tmp_path / "not-an-edm-checkout")
    (tmp_path / "junk.pkl").write_bytes(b"GIF89a not a network")
    with pytest.raises(ValueError, match="not a pickle"): load_edm_pickle(tmp_path / "junk.pkl")
    torch.save({"a": torch.zeros(1)}, tmp_path / "ckpt.pkl")
    with pytest.raises(ValueError, match="network='local'"): load_edm_pickle(tmp_path / "ckpt.pkl")
    with pytest.raises(FileNotFoundError, match="does not exist"): load_edm_pickle(tmp_path / "missing.pkl")
    with pytest.raises(ValueError, match="only local files"): load_edm_pickle("https://example.org/x.pkl")
    with open(tmp_path / "other.pkl", "wb") as f: pickle.dump({"model": 1}, f)
    with pytest.raises(ValueError, match="no 'ema'"), pytest.warns(UserWarning): load_edm_pickle(tmp_path / "other.pkl")


def test_cli_class_and_dataset(fake_edm, tmp_path):
    repo, pkl = fake_edm
    with pytest.warns(UserWarning):
        main(["--network", str(pkl), "--edm-repo", str(repo), "--class", "2", "--seeds", "0-2", "--steps", "4",
              "--outdir", str(tmp_path / "png"), "--device", "cpu"])
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["000000.png", "000001.png", "000002.png"]
    with pytest.warns(UserWarning):
        ds = main(["--network", str(pkl), "--edm-repo", str(repo), "--seeds", "0-1", "--steps", "3", "--batch", "8",
                   "--dataset", str(tmp_path / "edm.pt"), "--device", "cpu", "--S_churn", "2"])
    saved = load_torch(tmp_path / "edm.pt")
    assert saved["images"].shape == (20, 3, 8, 8) and saved["images"].dtype == torch.uint8
    assert saved["labels"].tolist() == [c for c in range(10) for _ in range(2)]
    assert saved["seeds"].tolist() == [0, 1] * 10
    st = saved["settings"]
    assert (st["network"], st["steps"], st["nfe"], st["S_churn"], st["classes"]) == ("edm-fake.pkl", 3, 5, 2.0, list(range(10)))
    assert math.isclose(st["sigma_max"], 80.0) and math.isclose(st["sigma_min"], 0.002)
    with pytest.raises(ValueError, match="bad seed range"), pytest.warns(UserWarning):
        main(["--network", str(pkl), "--edm-repo", str(repo), "--seeds", "9-1", "--dataset", str(tmp_path / "x.pt")])


# --- the local EDM trains ---------------------------------------------------------------------------------------
def _smoke_train_data():
    "The smoke profile's train split when `make data PROFILE=smoke` has run, else structured synthetic images."
    try:
        tr = load_splits("smoke").train
        return tr.x[:512], tr.y[:512], "smoke train split"
    except Exception:
        g = torch.Generator().manual_seed(0)
        y = torch.arange(256) % 10
        base = torch.linspace(20, 230, 10)[y].reshape(-1, 1, 1, 1)
        x = (base + torch.randn(256, 3, 32, 32, generator=g) * 25).clip(0, 255).to(torch.uint8)
        return x, y, "synthetic"


def test_local_edm_loss_decreases_on_smoke(tmp_path):
    p = step_params("smoke", "03_generate")
    unet = dict(channels=p["unet_channels"], mults=tuple(p["unet_mults"]), blocks=p["unet_blocks"], attn=p["unet_attn"])
    x, y, what = _smoke_train_data()
    before = edm_eval_loss(build_edm(unet), x, y, n=128)
    net, info = train_edm(x, y, tmp_path / "edm.pt", unet=unet, batch_size=p["train_batch"], lr=p["lr"],
                          lr_warmup_steps=5, max_steps=p["train_steps"], progress=False)
    after = edm_eval_loss(net, x, y, n=128)
    assert info["step"] == p["train_steps"]
    assert after < 0.85 * before, (what, before, after)
    ck = load_torch(tmp_path / "edm.pt")
    assert ck["step"] == p["train_steps"] and len(ck["losses"]) == p["train_steps"]


def test_frechet_matches_scipy():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 12, generator=g, dtype=torch.float64)
    b = torch.randn(300, 12, generator=g, dtype=torch.float64) @ torch.randn(12, 12, generator=g, dtype=torch.float64) + 0.5
    S1, S2 = np.cov(a.numpy().T), np.cov(b.numpy().T)
    ref = ((a.mean(0) - b.mean(0)) ** 2).sum().item() + np.trace(S1 + S2 - 2 * scipy_linalg.sqrtm(S1 @ S2).real)
    assert math.isclose(frechet_distance(a, b), ref, rel_tol=1e-6)


# --- the U-Net sees σ and the class ------------------------------------------------------------------------------
def _random_unet(seed=0, **kw):
    torch.manual_seed(seed)
    f = TinyUNet(channels=8, mults=(1, 2), blocks=1, attn=True, **kw)
    for p in f.parameters(): p.data.normal_(0, 0.2)      # not the zero-initialised F
    return f


def test_unet_uses_noise_level_and_label():
    f = _random_unet()
    x = torch.randn(2, 3, 8, 8); lab = torch.eye(10)[[1, 1]]
    a = f(x, torch.tensor([0.1, 0.1]), lab)
    assert (a - f(x, torch.tensor([0.5, 0.5]), lab)).abs().mean() > 1e-3 * a.abs().mean()              # c_noise matters
    assert (a - f(x, torch.tensor([0.1, 0.1]), torch.eye(10)[[7, 7]])).abs().mean() > 1e-3 * a.abs().mean()  # the label
    assert (a - f(x, torch.tensor([0.1, 0.1]), torch.zeros(2, 10))).abs().mean() > 1e-3 * a.abs().mean()     # "no class"
    net = EDMPrecond(f)   # and through the preconditioning, the same
    d1, d2 = net(x, 0.7, lab), net(x, 0.7, torch.eye(10)[[3, 3]])
    assert (d1 - d2).abs().mean() > 1e-4


# --- guidance in the step ------------------------------------------------------------------------------------------
def test_generate_images_guidance():
    net = GaussianDenoiser([0.1 * c - 0.5 for c in range(10)], 0.3, img_resolution=4, mu_uncond=0.0)
    kw = dict(num_steps=5, device="cpu", progress=False, S_churn=3)
    x0, y0 = generate_images(net, "0-5", 4, **kw)
    xw0, _ = generate_images(net, "0-5", 4, guidance=0.0, **kw)
    assert torch.equal(x0, xw0)                                       # w = 0: the unguided images, bit for bit
    xg, _ = generate_images(net, "0-5", 4, guidance=1.0, **kw)
    assert xg.float().mean() < x0.float().mean() - 5                  # class 4 (μ = −0.1) pushed away from μ_u = 0
    with pytest.raises(ValueError, match="unconditional mode"):
        generate_images(GaussianDenoiser([0.0] * 10, 0.5), "0", 1, guidance=1.0, progress=False)
    with pytest.raises(ValueError, match="unconditional mode"):
        generate_dataset(GaussianDenoiser([0.0] * 10, 0.5), None, seeds="0", guidance=0.5, progress=False)
    ds = generate_dataset(net, None, seeds="0-1", classes=[2], num_steps=4, guidance=2.0, device="cpu", progress=False)
    st = ds["settings"]
    assert (st["guidance"], st["nfe"], st["net_evals_per_image"]) == (2.0, 7, 14)


def test_official_pickle_refuses_guidance_keeps_unguided(fake_edm, tmp_path):
    repo, pkl = fake_edm
    with pytest.warns(UserWarning, match="runs code"):
        net = load_edm_pickle(pkl, edm_repo=repo)
    assert not has_uncond(net)
    x, _ = generate_images(net, "0-1", class_idx=3, device="cpu", progress=False, num_steps=4)
    with pytest.raises(ValueError, match="official EDM pickles have none"):
        generate_images(net, "0-1", class_idx=3, device="cpu", progress=False, num_steps=4, guidance=1.0)


def test_train_with_label_dropout_steps_budget(tmp_path):
    x, y, _ = _smoke_train_data()
    cfg = dict(channels=8, mults=(1, 2), blocks=1, attn=False)
    net, info = train_edm(x[:64], y[:64], tmp_path / "e.pt", unet=cfg, max_steps=4, batch_size=8, label_dropout=0.2,
                          label_dim=10, progress=False)
    assert info["step"] == 4 and has_uncond(net) and info["steps_per_s"] > 0
    assert has_uncond(load_local_edm(tmp_path / "e.pt")[0])
    with pytest.raises(ValueError, match="train_steps"): train_edm(x, y, None, unet=cfg, max_steps=None, progress=False)
    with pytest.raises(ValueError, match="label_dropout"): train_edm(x, y, None, unet=cfg, max_steps=1, label_dropout=1.0)
    # the training loss really drops labels at the given rate
    seen = []
    def spy(*args, **kw): seen.append(kw.get("label_dropout")); return real_loss(*args, **kw)
    real_loss = gen.edm_loss; gen.edm_loss = spy
    try: train_edm(x[:64], y[:64], None, unet=cfg, max_steps=2, batch_size=8, label_dropout=0.3, label_dim=10, progress=False)
    finally: gen.edm_loss = real_loss
    assert seen == [0.3, 0.3]
    # a recipe change (the learning rate) is not resumed
    _, info2 = train_edm(x[:64], y[:64], tmp_path / "e.pt", unet=cfg, max_steps=5, batch_size=8, label_dropout=0.2,
                         label_dim=10, lr=1e-4, progress=False)
    assert info2["new_steps"] == 5


def test_training_is_deterministic_and_resume_equals_one_run(tmp_path):
    "Issue 14: the same seed trains the same weights; 3 steps + 2 resumed steps equal 5 steps in one go."
    x, y, _ = _smoke_train_data()
    cfg = dict(channels=8, mults=(1, 2), blocks=1, attn=False)
    kw = dict(unet=cfg, batch_size=8, label_dropout=0.2, label_dim=10, progress=False)
    a, _ = train_edm(x[:64], y[:64], None, max_steps=5, **kw)
    torch.rand(7)                                        # whatever ran before must not change the initial weights
    b, _ = train_edm(x[:64], y[:64], None, max_steps=5, **kw)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    train_edm(x[:64], y[:64], tmp_path / "r.pt", max_steps=3, **kw)
    c, info = train_edm(x[:64], y[:64], tmp_path / "r.pt", max_steps=5, **kw)
    assert info["new_steps"] == 2 and all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), c.state_dict().values()))
    d, _ = train_edm(x[:64], y[:64], None, max_steps=5, seed=1, **kw)
    assert not all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), d.state_dict().values()))


# --- quality: a classifier that really classifies ---------------------------------------------------------------
CENTRES = torch.linspace(-1.5, 1.5, 10)

class Bands(torch.nn.Module):
    "Predicts the class from the image's mean normalised value (ten bands); its head's input is a 2-d feature."
    def __init__(self): super().__init__(); self.head = torch.nn.Linear(2, 10)
    def forward(self, x):
        m = x.mean(dim=(1, 2, 3)); self.head(torch.stack([m, m * m], 1))
        return -(m[:, None] - CENTRES) ** 2

class Const(torch.nn.Module):
    def __init__(self, k): super().__init__(); self.k = k; self.head = torch.nn.Linear(1, 10)
    def forward(self, x): return torch.nn.functional.one_hot(torch.full((len(x),), self.k), 10).float() + 0 * self.head(x[:, :1, 0, :1].flatten(1))

def band_images(labels, seed=0):
    g = torch.Generator().manual_seed(seed)
    m, s = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    v = (CENTRES[labels].view(-1, 1, 1, 1) * s + m) * 255
    return (v + torch.randn(len(labels), 3, 8, 8, generator=g) * 2).round().clamp(0, 255).to(torch.uint8)


def test_agreement_scores_the_conditioning_labels():
    labels = torch.arange(50) % 10
    imgs = band_images(labels, 1)
    real = Split(band_images(torch.arange(80) % 10, 2), torch.arange(80) % 10)
    zoo = {"bands": (Bands(), {"test_acc": 0.1}), "const": (Const(3), {"test_acc": 0.99})}
    q = edm_quality(imgs, labels, zoo, real, real, device="cpu")
    assert q["classifier"] == "bands" and q["classifier_agreement"] > 0.95
    assert q["real_baseline_agreement"] > 0.95
    assert edm_quality(imgs, (labels + 3) % 10, zoo, real, real, device="cpu")["classifier_agreement"] == 0.0
    assert q["agreement_per_class"][4] > 0.9
    wrong_class4 = labels.clone(); wrong_class4[labels == 4] = 5
    assert edm_quality(imgs, wrong_class4, zoo, real, real, device="cpu")["agreement_per_class"][5] < 0.6


def test_classifier_chosen_on_ideal_not_test():
    ideal = Split(band_images(torch.arange(40) % 10, 3), torch.arange(40) % 10)
    zoo = {"bands": (Bands(), {"test_acc": 0.05}), "const": (Const(3), {"test_acc": 0.99})}
    name, _, _, accs = best_classifier(zoo, ideal, device="cpu")
    assert name == "bands" and accs["const"] == pytest.approx(0.1)
    only3 = Split(ideal.x[ideal.y == 3], ideal.y[ideal.y == 3])           # on these, const is perfect: it wins
    assert best_classifier(zoo, only3, device="cpu")[0] == "const"
    with pytest.raises(ValueError, match="ideal split"): best_classifier(zoo, None)


def test_choose_guidance_rule():
    net = GaussianDenoiser([float(c) for c in CENTRES * 0.25], 0.05, img_resolution=8, mu_uncond=0.0)
    class InModel(torch.nn.Module):      # classify by mean pixel in model range
        def __init__(self): super().__init__(); self.head = torch.nn.Linear(2, 10)
        def forward(self, x):
            px = x * torch.tensor(CIFAR10_STD).view(1, 3, 1, 1) + torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
            m = (px * 2 - 1).mean(dim=(1, 2, 3)); self.head(torch.stack([m, m * m], 1))
            return -(m[:, None] - CENTRES * 0.25) ** 2 * 1e4
    ideal = Split(to_uint8((CENTRES * 0.25).repeat(3).view(-1, 1, 1, 1) + 0.05 * torch.randn(30, 3, 8, 8)), torch.arange(10).repeat(3))
    w, rows = choose_guidance(net, [0.0, 0.5, 3.0], InModel(), ideal, seeds="0-1", num_steps=6, device="cpu")
    assert [r["w"] for r in rows] == [0.0, 0.5, 3.0]
    assert rows[0]["agreement"] > 0.9 and w == 0.0            # exact denoiser: guidance only distorts (higher Fréchet)
    assert rows[2]["frechet"] > rows[0]["frechet"]


def test_pick_guidance_rule():
    rows = [dict(w=0.0, agreement=0.3, frechet=10.0, real_ideal_agreement=0.8),
            dict(w=1.0, agreement=0.7, frechet=20.0, real_ideal_agreement=0.8),
            dict(w=2.0, agreement=0.9, frechet=30.0, real_ideal_agreement=0.8)]
    assert pick_guidance(rows) == 1.0                  # reaches 0.8 × 0.8, lowest Fréchet among those that do
    assert pick_guidance(rows, target=1.0) == 2.0
    assert pick_guidance(rows[:2], target=1.0) == 1.0  # none reaches the target: the highest agreement
