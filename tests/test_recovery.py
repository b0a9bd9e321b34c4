"Recovery that recovers (issue 18): adaptive BN, BatchNorm statistics left alone by the fine-tune, distillation, Slim's λ, CSR on non-square layers."
import copy, math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import metacompress.compress as compress_module
from metacompress.compress import compress
from metacompress.measure import weight_storage_bits
from metacompress.recovery import Context, bn_augmentation, reestimate_bn
from metacompress.registry import Budget
from metacompress.data import Split, augment_batch, normalize
from metacompress.finetune import distillation_loss, evaluate, train_model
from metacompress.testing import TinyNet, toy_split


@pytest.fixture(scope="module")
def trained():
    "A TinyNet trained on the toy task (its BatchNorm statistics are the training run's)."
    torch.manual_seed(0); torch.set_num_threads(1)
    data = toy_split(512, num_classes=10, seed=0); net = TinyNet()
    train_model(net, data, max_steps=60, batch_size=64, lr=0.05, progress=False)
    return net, data, toy_split(256, num_classes=10, seed=1)


def _first_bn_input(model, data, n, seed, batch_size=128):
    "The pre-BN activations of the first BatchNorm on the same augmented images reestimate_bn sees (written independently)."
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d)); got = []
    h = bn.register_forward_hook(lambda m, i, o: got.append(i[0].detach()))
    g = torch.Generator().manual_seed(seed)
    x = torch.cat([augment_batch(data.x[i:min(i + batch_size, n)], g) for i in range(0, n, batch_size)])
    with torch.no_grad(): model.eval()(normalize(x, data.mean, data.std))
    h.remove(); return bn, got[0]


def test_reestimate_bn_sets_population_statistics_and_leaves_weights(trained):
    net, data, _ = trained; m = copy.deepcopy(net)
    bn = next(b for b in m.modules() if isinstance(b, nn.BatchNorm2d))
    bn.running_mean.fill_(5.0); bn.running_var.fill_(100.0)          # garbage statistics
    params = {k: v.clone() for k, v in m.named_parameters()}
    reestimate_bn(m, data, 64, seed=3)                                 # 64 images, one batch: exact population statistics
    _, a = _first_bn_input(m, data, 64, 3)
    torch.testing.assert_close(bn.running_mean, a.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.running_var, a.transpose(0, 1).flatten(1).var(1, unbiased=True), rtol=1e-3, atol=1e-5)
    for k, v in m.named_parameters(): assert torch.equal(v, params[k]), k   # weights untouched
    assert bn.momentum == 0.1                                          # momentum restored


def test_reestimate_bn_averages_over_batches_not_an_ema(trained):
    "Cumulative average (momentum None): 4 batches of 16 give each batch's statistics weight 1/4, not an EMA's recency."
    net, data, _ = trained; m = copy.deepcopy(net)
    reestimate_bn(m, data, 64, batch_size=16, seed=3)
    bn, a = _first_bn_input(m, data, 64, 3, batch_size=16)
    means = torch.stack([a[i:i + 16].mean((0, 2, 3)) for i in range(0, 64, 16)])
    bn_m = next(b for b in m.modules() if isinstance(b, nn.BatchNorm2d))
    torch.testing.assert_close(bn_m.running_mean, means.mean(0), rtol=1e-4, atol=1e-5)


def test_recover_reestimates_after_the_fine_tune(trained):
    "ctx.recover ends with adaptive BN on the final weights: its statistics equal an independent re-estimation."
    net, data, _ = trained; m = copy.deepcopy(net)
    b = Budget(recovery_steps=3, batch_size=32, lr=0.01, bn_images=64, seed=0)
    Context(data, b, data.inputs(slice(0, 8))).recover(m)
    ref = reestimate_bn(copy.deepcopy(m), data, 64, seed=0)
    for x, y in zip(m.modules(), ref.modules()):
        if isinstance(x, nn.BatchNorm2d):
            torch.testing.assert_close(x.running_mean, y.running_mean); torch.testing.assert_close(x.running_var, y.running_var)


def test_recovery_with_zero_steps_still_reestimates(trained):
    net, data, _ = trained; m = copy.deepcopy(net)
    bn = next(b for b in m.modules() if isinstance(b, nn.BatchNorm2d)); bn.running_var.fill_(100.0)
    Context(data, Budget(recovery_steps=0, bn_images=64), data.inputs(slice(0, 8))).recover(m)
    assert bn.running_var.max() < 50


def test_fine_tune_leaves_running_statistics_alone(trained):
    "The recovery's fine-tune (bn_eval) never updates running statistics from its small noisy batches."
    net, data, _ = trained; m = copy.deepcopy(net)
    before = [b.running_var.clone() for b in m.modules() if isinstance(b, nn.BatchNorm2d)]
    train_model(m, data, max_steps=3, batch_size=8, lr=0.01, progress=False, bn_eval=True)
    after = [b.running_var for b in m.modules() if isinstance(b, nn.BatchNorm2d)]
    for x, y in zip(before, after): assert torch.equal(x, y)


def test_none_after_recovery_stays_at_the_uncompressed_accuracy(trained):
    net, data, ev = trained
    base = evaluate(net, ev)["acc"]
    _, rep = compress(net, "none", 0, data, Budget(recovery_steps=5, batch_size=32, lr=0.003, bn_images=256, calib_images=16,
                                                   latency_repeats=1, latency_warmup=0), eval_split=ev)
    assert rep["test_acc"] >= base - 0.02, (rep["test_acc"], base)      # the baseline's recovery never costs it accuracy


def test_adaptive_bn_brings_a_pruned_model_back(trained):
    "Pruning without any recovery vs adaptive BN alone: the re-estimated statistics must not lose accuracy."
    net, data, ev = trained
    kw = dict(batch_size=32, calib_images=16, latency_repeats=1, latency_warmup=0, recovery_steps=0)
    _, off = compress(net, "l1_filter", 0.5, data, Budget(bn_images=0, **kw), eval_split=ev)
    _, on = compress(net, "l1_filter", 0.5, data, Budget(bn_images=256, **kw), eval_split=ev)
    assert on["test_acc"] >= off["test_acc"], (on["test_acc"], off["test_acc"])


def test_distillation_loss_by_hand():
    s = torch.tensor([[1.0, 0.0]]); t = torch.tensor([[0.0, 2.0]]); T = 2.0
    p = torch.softmax(t / T, 1); q = torch.softmax(s / T, 1)
    want = float((p * (p.log() - q.log())).sum() * T * T)          # T^2 KL(p_teacher || p_student)
    assert math.isclose(float(distillation_loss(s, t, T)), want, rel_tol=1e-5)
    assert math.isclose(float(distillation_loss(t, t, T)), 0.0, abs_tol=1e-7)


def test_kd_recovery_uses_the_teacher(trained):
    "With kd_alpha 1 the labels do not matter: shuffled labels give the same model."
    net, data, _ = trained
    b = Budget(recovery_steps=3, batch_size=32, lr=0.01, bn_images=0, kd_alpha=1.0, calib_images=8, latency_repeats=1, latency_warmup=0)
    shuffled = Split(data.x, data.y[torch.randperm(len(data.y), generator=torch.Generator().manual_seed(0))], data.mean, data.std)
    a, _ = compress(net, "none", 0, data, b); c, _ = compress(net, "none", 0, shuffled, b)
    for x, y in zip(a.parameters(), c.parameters()): torch.testing.assert_close(x, y)
    d, _ = compress(net, "none", 0, shuffled, Budget(**{**b.__dict__, "kd_alpha": 0.0}))
    assert any(not torch.allclose(x, y) for x, y in zip(a.parameters(), d.parameters()))


def test_teacher_logits_memo_changes_nothing_and_keys_on_the_teacher(trained):
    "The per-process memo of the teacher's logits: the same model as computing them again, and a new teacher is asked."
    from metacompress import finetune as ft
    net, data, _ = trained
    def distil(teacher):
        m = copy.deepcopy(net)
        train_model(m, data, max_steps=3, batch_size=32, lr=0.01, progress=False, bn_eval=True, channels_last=True,
                    teacher=teacher, kd_alpha=1.0)
        return list(m.parameters())
    ft._TEACHER_MEMO.clear()
    a = distil(net); assert len(ft._TEACHER_MEMO) == 3                    # one entry per step's batch
    b = distil(net); assert len(ft._TEACHER_MEMO) == 3                    # the same batches: remembered
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    other = copy.deepcopy(net)
    with torch.no_grad():
        for p in other.parameters(): p.mul_(0.5)
    c = distil(other)                                                    # another teacher on the same batches
    ft._TEACHER_MEMO.clear(); d = distil(other)
    assert all(torch.equal(x, y) for x, y in zip(c, d)), "a memo hit must give what the teacher computes"
    assert any(not torch.equal(x, y) for x, y in zip(a, c))


def test_slim_lambda_reaches_the_loss_and_gamma_shrinks(trained):
    net, data, _ = trained
    kw = dict(recovery_steps=0, bn_images=0, batch_size=32, lr=0.05, slim_sparsity_steps=10, calib_images=16, latency_repeats=1, latency_warmup=0)
    _, strong = compress(net, "slim", 0.2, data, Budget(slim_l1=1.0, **kw))
    _, none = compress(net, "slim", 0.2, data, Budget(slim_l1=0.0, **kw))
    assert strong["slim_l1"] == 1.0                                    # slim_shrink 0: λ is the profile's, nothing raised
    assert strong["gamma_mean_after"] < 0.9 * none["gamma_mean_after"], (strong["gamma_mean_after"], none["gamma_mean_after"])


def test_csr_column_index_sized_by_columns():
    "A non-square layer: CSR's column index needs ceil(log2(columns)) bits, not log2(rows)."
    w = torch.zeros(4, 1000); w[:, :3] = 1.0                             # 12 non-zeros, 4 rows, 1000 columns
    bits, fmt = weight_storage_bits(w, 8)
    assert fmt == "csr"
    assert bits == 12 * (8 + 10) + 32 * (4 + 1)
    w2 = torch.zeros(1000, 4); w2[:3, :] = 1.0                           # the transpose: 2-bit column indices
    assert weight_storage_bits(w2, 8)[0] == min(12 * (8 + 2) + 32 * 1001, 4000 + 12 * 8)


def test_bn_augmentation_picks_the_lower_held_out_loss(trained):
    "The adaptive-BN image mode is chosen on clean held-out training images, by loss (training data only)."
    net, data, _ = trained
    got = bn_augmentation(net, data, 64, seed=0, held=128)
    h = data[64:192]; loss = {}
    for aug in (True, False):
        m = reestimate_bn(copy.deepcopy(net), data, 64, seed=0, augment=aug).eval()
        with torch.no_grad(): loss[aug] = float(F.cross_entropy(m(h.inputs()), h.y))
    assert loss[True] != loss[False]
    assert got == (loss[True] <= loss[False])


def test_reestimate_bn_without_augmentation_uses_the_images_as_they_are(trained):
    net, data, _ = trained; m = copy.deepcopy(net)
    reestimate_bn(m, data, 64, augment=False)
    bn = next(b for b in m.modules() if isinstance(b, nn.BatchNorm2d)); got = []
    h = bn.register_forward_hook(lambda mod, i, o: got.append(i[0].detach()))
    with torch.no_grad(): m.eval()(data.inputs(slice(0, 64)))
    h.remove()
    torch.testing.assert_close(bn.running_mean, got[0].mean((0, 2, 3)), rtol=1e-4, atol=1e-5)


def _select_ctx(data, **kw):
    "A Context that trains on all but the last 128 toy images and chooses the recovery's outcome on those 128."
    sel, rest = data[len(data) - 128:], data[:len(data) - 128]
    return Context(rest, Budget(**{"bn_images": 64, "seed": 0, "batch_size": 32, **kw}), rest.inputs(slice(0, 8)), select=sel), sel


def test_recovery_that_hurts_is_not_kept(trained):
    "A diverging fine-tune (lr 5) is rejected: the model keeps its weights and statistics exactly, and the context says so."
    net, data, _ = trained; m = copy.deepcopy(net)
    ctx, _ = _select_ctx(data, recovery_steps=5, lr=5.0)
    ctx.recover(m)
    assert ctx.extra["recovery_kept"] == "as_is"
    for (k, v), (_, w) in zip(m.state_dict().items(), net.state_dict().items()): assert torch.equal(v, w), k


def test_recovery_keeps_the_candidate_with_the_lowest_held_out_loss(trained):
    "The kept state is the argmin of the held-out loss over {as it came, adaptive BN only, fine-tune + adaptive BN}, rebuilt independently."
    net, data, _ = trained; damaged = copy.deepcopy(net); g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for c in damaged.modules():
            if isinstance(c, nn.Conv2d): c.weight.add_(0.5 * c.weight.std() * torch.randn(c.weight.shape, generator=g))
    ctx, sel = _select_ctx(data, recovery_steps=10, lr=0.01)
    m = copy.deepcopy(damaged); ctx.recover(m)
    bn_only = reestimate_bn(copy.deepcopy(damaged), ctx.data, 64, seed=0)
    rec = copy.deepcopy(damaged); Context(ctx.data, ctx.budget, ctx.calib_x).recover(rec)      # no `select`: always the fine-tune
    loss = {k: evaluate(v, sel)["loss"] for k, v in {"as_is": damaged, "bn_only": bn_only, "recovered": rec}.items()}
    assert ctx.extra["recovery_kept"] == min(loss, key=loss.get), loss
    assert evaluate(m, sel)["loss"] == pytest.approx(min(loss.values()), rel=1e-6)
    assert min(loss.values()) < loss["as_is"]                         # this damage is one a recovery repairs


def test_scheduled_phases_are_always_kept(trained):
    "AGP's schedule and Slim's sparsity phase run through `extra_loss`: they are the method, never rolled back."
    net, data, _ = trained
    ctx, _ = _select_ctx(data, recovery_steps=3, lr=5.0)
    ctx.recover(copy.deepcopy(net), extra_loss=lambda mm: torch.zeros(()))
    assert "recovery_kept" not in ctx.extra


def test_compress_holds_the_selection_images_out_of_training(trained):
    "compress() gives the methods every training image but the last `select_images` (at most a quarter), which choose."
    net, data, ev = trained; seen = {}
    orig = compress_module.Context
    class Spy(orig):
        def recover(self, model, *a, **k):
            seen.update(train=len(self.data), select=len(self.select)); return super().recover(model, *a, **k)
    compress_module.Context = Spy
    try: compress(net, "none", 0, data, Budget(recovery_steps=1, select_images=100, bn_images=32, calib_images=8, latency_repeats=1, latency_warmup=0))
    finally: compress_module.Context = orig
    assert seen == {"train": len(data) - 100, "select": 100}


def test_bn_augmentation_choice_is_remembered_per_weights_not_per_name(monkeypatch):
    "A retrained member keeps its name: the per-process memo must ask again for new weights (and never for the same ones)."
    import metacompress.recovery as R
    from metacompress.registry import Budget
    from metacompress.testing import TinyNet, toy_split
    calls = []
    monkeypatch.setattr(R, "bn_augmentation", lambda model, *a, **k: calls.append(1) or True)
    monkeypatch.setattr(R, "_BN_AUGMENT", {})
    data, b = toy_split(64), Budget(bn_images=16)
    torch.manual_seed(0); first = TinyNet(); torch.manual_seed(1); retrained = TinyNet()
    for model in (first, first, retrained, retrained): R.choose_bn_augmentation(model, data, b, name="member")
    assert len(calls) == 2
    R.choose_bn_augmentation(first, toy_split(64, seed=3), b, name="member")           # other images of the same size
    assert len(calls) == 3
