"Tests of metacompress.extract: feature formulas on hand-made inputs, the cell, the schema, leakage, determinism, resume."
import math, os, pickle, signal, subprocess, sys, textwrap, time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from metacompress.compress import Budget, NotApplicable, register, METHODS; from metacompress.testing import TinyNet
from metacompress.data import Split, Splits
from metacompress.extract import ExtractJob, draw_sources, extract_cell, grid_keys
from metacompress.features import (FeatureSettings, agreement, behaviour, cell_features, expected_calibration_error, gradient_features,
                                   predictive_entropy, relative_change, synflow, weight_features)
from metacompress.registry import method_traits
from metacompress.schema import COLUMNS, FEATURES, SOURCES, TARGET_COLUMNS, check_schema
from metacompress.settings import SettingsError
from metacompress.testing import toy_split
from metacompress.grid import run_grid

HERE = Path(__file__).resolve().parent
METHODS_T = ["global_magnitude", "l1_filter", "svd", "ptq_minmax"]
MEASURED = [c for c in COLUMNS if c.startswith("t_") or c.startswith("f_latency")]   # wall-clock measurements


pytestmark = pytest.mark.usefixtures("one_thread")   # conftest.py


def toy_common(test_perm: bool = False, bn: bool = True) -> ExtractJob:
    "A self-contained world: a TinyNet zoo, toy splits and generated images (no profile files needed)."
    torch.manual_seed(0); net = TinyNet(width=8, bn=bn).eval()
    sp = Splits(train=toy_split(128, seed=2), ideal=toy_split(64, seed=3), test=toy_split(200, seed=4),
                classes=tuple(str(i) for i in range(10)), data_hash="toy")
    gen = toy_split(40, seed=5)
    test = sp.test
    if test_perm: test = Split(test.x, test.y[torch.randperm(len(test.y), generator=torch.Generator().manual_seed(9))])
    return ExtractJob("toy", Budget(recovery_steps=1, batch_size=16, calib_images=16, slim_sparsity_steps=1, taylor_batches=1,
                                    latency_repeats=1, latency_warmup=0),
                      FeatureSettings(batch_size=64, grad_n=8, curvature_n=8, lanczos_k=2, lanczos_iter=3, trace_matvecs=3),
                      draw_sources(sp, {"images": gen.x, "labels": gen.y}, 16), test=test, train=sp.train,
                      zoo={f"tiny{'' if bn else '_nobn'}": (net, {"name": "tiny", "family": "tiny"})}, threads=1)


def table(results) -> pd.DataFrame:
    return check_schema(pd.DataFrame([row for r in results for row in r["rows"]]))


# ---------- formulas on hand-made inputs ----------
def test_ece_by_hand():
    p = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.6, 0.4], [0.3, 0.7]]); y = torch.tensor([0, 1, 0, 1])
    # bins: 0.9 -> (0.867, 0.933] acc 1 conf .9; 0.6 x2 -> acc .5 conf .6; 0.7 -> (0.667, 0.733] acc 1 conf .7
    want = 0.25 * 0.1 + 0.5 * 0.1 + 0.25 * 0.3
    assert expected_calibration_error(p, y) == pytest.approx(want, abs=1e-6)
    assert expected_calibration_error(torch.tensor([[0.5, 0.5]] * 4), torch.tensor([0, 0, 0, 1]), n_bins=2) == pytest.approx(0.25)
    assert expected_calibration_error(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])) == pytest.approx(0.0)
    # bins are right-closed: confidence 0.5 falls in (0, 0.5], not with 0.9 in (0.5, 1]
    assert expected_calibration_error(torch.tensor([[0.5, 0.5], [0.9, 0.1]]), torch.tensor([0, 1]), n_bins=2) == pytest.approx(0.5 * 0.5 + 0.5 * 0.9)


def test_entropy_agreement_behaviour_by_hand():
    assert predictive_entropy(torch.full((2, 4), 0.25)).tolist() == pytest.approx([math.log(4)] * 2)
    assert predictive_entropy(torch.tensor([[0.5, 0.25, 0.25]])).item() == pytest.approx(1.5 * math.log(2))
    assert predictive_entropy(torch.tensor([[1.0, 0.0]])).item() == pytest.approx(0.0)
    a, b = torch.tensor([[1., 0], [0, 1], [1, 0], [0, 1]]), torch.tensor([[2., 0], [0, 3], [0, 1], [0, 1]])
    assert agreement(a, b) == pytest.approx(0.75)
    beh = behaviour(torch.tensor([[0., 0.], [math.log(3), 0.]]), torch.tensor([1, 0]), torch.tensor([[0., 0.], [0., 0.]]))
    assert beh["acc"] == pytest.approx(0.5)            # argmax of a tie is class 0 (wrong), then right
    assert beh["loss"] == pytest.approx((math.log(2) - math.log(0.75)) / 2)
    assert beh["confidence"] == pytest.approx((0.5 + 0.75) / 2)
    assert beh["agreement"] == pytest.approx(1.0)
    # KL(p0 || p): p0 uniform, p = (3/4, 1/4) for the second row
    assert beh["kl"] == pytest.approx((0 + 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)) / 2)


def test_norms_and_relative_change_by_hand():
    class Two(nn.Module):
        def __init__(s, a, b):
            super().__init__(); s.l1 = nn.Linear(2, 2, bias=False); s.l2 = nn.Linear(2, 1, bias=False)
            s.l1.weight.data = a; s.l2.weight.data = b
        def forward(s, x): return s.l2(s.l1(x))
    base = Two(torch.tensor([[3., 0], [0, 4]]), torch.tensor([[2., 0]]))
    comp = Two(torch.tensor([[3., 0], [0, 0]]), torch.tensor([[1., -1]]))
    f = weight_features(comp, base)
    assert f["f_w_l1"] == pytest.approx(5) and f["f_w_l2"] == pytest.approx(math.sqrt(11)) and f["f_w_linf"] == pytest.approx(3)
    assert f["f_w_layer_rms_mean"] == pytest.approx((3 / 2 + 1) / 2) and f["f_w_layer_rms_std"] == pytest.approx(0.25)
    assert f["f_w_l2_ratio"] == pytest.approx(math.sqrt(11) / math.sqrt(29))
    assert f["f_w_rel_change"] == pytest.approx(math.sqrt(16 + 2) / math.sqrt(29))
    assert f["f_w_rel_change_layer_mean"] == pytest.approx((0.8 + math.sqrt(2) / 2) / 2)
    assert relative_change(torch.tensor([1., 1.]), torch.tensor([1., 0.])) == pytest.approx(1.0)
    neg = weight_features(Two(torch.tensor([[1., 0], [0, 1]]), torch.tensor([[-5., 0]])), base)
    assert neg["f_w_linf"] == pytest.approx(5) and neg["f_w_l1"] == pytest.approx(7)      # magnitudes, not signed values
    # a shape change (structured pruning): only matched layers count
    small = Two(torch.tensor([[3., 0], [0, 4]]), torch.tensor([[2., 0]])); small.l1 = nn.Linear(2, 1, bias=False)
    assert weight_features(small, base)["f_w_matched"] == pytest.approx(2 / 6)


def test_gradient_norm_and_snip_by_hand():
    lin = nn.Linear(2, 2, bias=False); lin.weight.data = torch.tensor([[1., -2.], [3., 4.]])
    x, y = torch.tensor([[1., 2.]]), torch.tensor([0])
    p = (lin.weight.detach() @ x[0]).softmax(0)
    g = torch.outer(p - torch.tensor([1., 0.]), x[0])                      # dCE/dW = (p - e_y) x^T
    f = gradient_features(nn.Sequential(lin), x, y)
    assert f["f_src_grad_norm"] == pytest.approx(float(g.norm()), rel=1e-5)
    assert f["f_src_snip"] == pytest.approx(float((g * lin.weight.detach()).abs().sum()), rel=1e-5)


def test_sources_are_fixed_and_augmented_differs_from_train():
    a, b = toy_common().sources, toy_common().sources
    assert all(torch.equal(a[k].x, b[k].x) for k in SOURCES if k != "none") and a["none"] is None
    assert torch.equal(a["augmented"].y, a["train"].y) and not torch.equal(a["augmented"].x, a["train"].x)
    assert len({len(v) for v in a.values() if v is not None}) == 1


# ---------- the cell ----------
@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
    common = toy_common()
    keys = grid_keys(["tiny"], METHODS_T, "first")
    res = run_grid(extract_cell, keys, common, tmp_path_factory.mktemp("grid"), progress=False)
    return common, keys, table(res.values())


def test_tiny_grid_has_every_column_for_every_source_and_no_nan_targets(grid_run):
    _, keys, df = grid_run
    assert list(df.columns) == COLUMNS
    assert len(df) == len(keys) * len(SOURCES) and set(df.source) == set(SOURCES)
    assert df.applicable.all() and not df[TARGET_COLUMNS].isna().any().any()
    assert set(df.method) == {"none", *METHODS_T}
    dep = FEATURES.name[FEATURES.source_dependent].tolist()
    real = df[df.source != "none"]
    assert not real[[c for c in dep if c != "f_src_hess_eig3"]].isna().any().any()  # lanczos_k=2: eig3 NaN
    assert df[df.source == "none"][dep].isna().all().all()
    free = [c for c in FEATURES.name[~FEATURES.source_dependent] if c not in ("f_latency_b1_ms", "f_latency_b64_ms")]
    assert (df.groupby("cell_id")[free].nunique(dropna=False) == 1).all().all()   # data-free features equal across sources
    assert ((df.y_test_acc_se - np.sqrt(df.y_test_acc * (1 - df.y_test_acc) / df.y_test_n)).abs() < 1e-12).all()
    assert (df.y_test_acc_drop == df.y_base_test_acc - df.y_test_acc).all()
    for b in ("loss", "acc", "confidence", "entropy", "ece"):     # differences are compressed - base
        assert ((real[f"f_d_src_{b}"] - (real[f"f_src_{b}"] - real[f"f_base_src_{b}"])).abs() < 1e-9).all(), b
    assert (real[real.method != "none"].f_d_src_loss != 0).any()
    ok = df[df.method == "global_magnitude"]
    assert ok.f_sparsity.iloc[0] == pytest.approx(ok.level.iloc[0], abs=0.02)


def test_no_leakage_permuted_test_labels_change_targets_only(grid_run):
    common, keys, df = grid_run
    key = keys[1]
    perm = table([extract_cell(key, toy_common(test_perm=True))])
    orig = df[df.cell_id == perm.cell_id.iloc[0]].reset_index(drop=True)
    feats = [c for c in perm.columns if c.startswith("f_") and c not in MEASURED]
    pd.testing.assert_frame_equal(perm[feats], orig[feats])
    assert (perm.y_test_acc != orig.y_test_acc).any() or (perm.y_test_loss != orig.y_test_loss).any()
    assert (perm.y_base_test_acc != orig.y_base_test_acc).any() or (perm.y_base_test_loss != orig.y_base_test_loss).any()


def test_same_seed_gives_identical_rows(grid_run):
    common, keys, df = grid_run
    again = table([extract_cell(k, common) for k in keys[:3]])
    cols = [c for c in COLUMNS if c not in MEASURED]
    orig = df[df.cell_id.isin(again.cell_id)].reset_index(drop=True)
    pd.testing.assert_frame_equal(again[cols], orig[cols])


def test_not_applicable_is_recorded_with_reason():
    rows = extract_cell({"model": "tiny_nobn", "method": "slim", "level": 0.2, "seed": 0}, toy_common(bn=False))["rows"]
    df = table([{"rows": rows}])
    assert (~df.applicable).all() and df.reason.str.len().min() > 0 and set(df.source) == set(SOURCES)
    assert (df.f_method == "slim").all() and df.f_family.iloc[0] == "tiny"
    traits = method_traits("slim")   # the registry's traits, as on a cell where the method applies
    assert (df.f_granularity == traits["granularity"]).all() and (df.f_criterion == traits["criterion"]).all()


def test_extract_job_travels_by_pickle():
    job = toy_common()   # the process pool and Ray pickle the job
    back = pickle.loads(pickle.dumps(job))
    assert back.profile == job.profile and back.budget == job.budget and back.settings == job.settings
    assert torch.equal(back.sources["ideal"].x, job.sources["ideal"].x)


def test_feature_settings_from_profile_keys():
    s = FeatureSettings.from_params({"feature_batch": 32, "grad_n": 4, "recovery_steps": 2}, others=["recovery_steps"])
    assert (s.batch_size, s.grad_n) == (32, 4) and FeatureSettings.from_params(s.to_params()) == s
    with pytest.raises(SettingsError, match="did you mean 'lanczos_iter'"): FeatureSettings.from_params({"lanczos_iters": 3})


def test_a_real_bug_stops_the_cell():
    if "_buggy" not in METHODS:
        @register("_buggy", "unstructured", kind="sparsity", grid=(0.5,), bounds=(0, 0.99))
        def _buggy(model, level, ctx): return 1 / 0
    with pytest.raises(ZeroDivisionError):
        extract_cell({"model": "tiny", "method": "_buggy", "level": 0.5, "seed": 0}, toy_common())


def test_cell_features_none_source_is_data_free():
    torch.manual_seed(0); net = TinyNet(width=4).eval()
    f = cell_features(net, net, None, report={"method": "none", "family": "baseline"})
    dep = FEATURES.name[FEATURES.source_dependent]
    assert all(math.isnan(f[c]) for c in dep) and f["f_w_rel_change"] == 0.0 and f["f_granularity"] == "none"


def test_schema_check_refuses_bad_tables(grid_run):
    df = grid_run[2]
    with pytest.raises(ValueError, match="missing"): check_schema(df.drop(columns=["f_src_ece"]))
    with pytest.raises(ValueError, match="undocumented"): check_schema(df.assign(f_new=1.0))
    with pytest.raises(ValueError, match="duplicate"): check_schema(pd.concat([df, df.iloc[:1]]))
    with pytest.raises(ValueError, match="NaN targets"): check_schema(df.assign(y_test_acc=np.nan))


SCRIPT = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[2])
    from test_extract import toy_common, METHODS_T
    from metacompress.extract import extract_cell, grid_keys
    from metacompress.grid import run_grid
    run_grid(extract_cell, grid_keys(["tiny"], METHODS_T, "first"), toy_common(), sys.argv[1], progress=False)
""")

def test_kill_mid_run_and_resume_equals_uninterrupted(grid_run, tmp_path):
    common, keys, df = grid_run
    out = tmp_path / "killed"
    p = subprocess.Popen([sys.executable, "-c", SCRIPT, str(out), str(HERE)], start_new_session=True)
    try:
        t0 = time.time()
        while len(list(out.glob("*.json"))) < 1 and time.time() - t0 < 300 and p.poll() is None: time.sleep(0.05)
        os.killpg(p.pid, signal.SIGKILL)
    finally: p.wait()
    done = len(list(out.glob("*.json")))
    assert 1 <= done < len(keys), done
    resumed = table(run_grid(extract_cell, keys, common, out, progress=False).values())
    assert len(list(out.glob("*.json"))) == len(keys)
    cols = [c for c in COLUMNS if c not in MEASURED]
    pd.testing.assert_frame_equal(resumed[cols], df[cols])
