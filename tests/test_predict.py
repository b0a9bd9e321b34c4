"The meta-predictor: schema, folds, split isolation, tuning, intervals, predictor files, reproducibility."
import json
import numpy as np
import pandas as pd
import pytest
import metacompress.predict as P
from metacompress.predict import (FeatureSchema, PredictSettings, cross_validate, fit_models, group_folds, inner_splits, load_metadata, load_predictor,
                                  make_synthetic_metadata, run_predict, save_predictor, score_predictions, train_predictor, tune)
from metacompress.settings import SettingsError

XGB = {"n_estimators": 25, "learning_rate": 0.2}

@pytest.fixture(scope="module")
def syn():
    return make_synthetic_metadata(n_models=4, n_methods=4, n_levels=3, sources=("ideal", "none"), seed=3)

def test_load_metadata_prefers_data_then_figures_and_names_the_fix(tmp_path, monkeypatch, syn):
    monkeypatch.setenv("METACOMPRESS_DATA_DIR", str(tmp_path / "data")); monkeypatch.setenv("METACOMPRESS_FIGURES_DIR", str(tmp_path / "figs"))
    with pytest.raises(FileNotFoundError, match="make extract PROFILE=quick"): load_metadata("quick")
    (tmp_path / "figs/quick").mkdir(parents=True, exist_ok=True); syn.head(10).to_parquet(tmp_path / "figs/quick/metadata.parquet")
    assert len(load_metadata("quick")) == 10
    (tmp_path / "data/metadata/quick").mkdir(parents=True, exist_ok=True); syn.head(20).to_parquet(tmp_path / "data/metadata/quick/metadata.parquet")
    assert len(load_metadata("quick")) == 20
    syn.drop(columns=["y_test_n"]).to_parquet(tmp_path / "data/metadata/quick/metadata.parquet")
    with pytest.raises(ValueError, match="y_test_n"): load_metadata("quick")

def test_folds_are_grouped_and_cover_every_cell_once(syn):
    cells = P.cell_table(syn)
    for kind in P.SPLITS:
        folds = group_folds(syn, kind, k=3, seed=0)
        tested = [c for _, _, te in folds for c in te]
        assert len(tested) == len(set(tested))
        for name, tr, te in folds:
            assert not set(tr) & set(te) and set(tr) | set(te) == set(cells.cell_id)
        if kind.startswith("compr"): assert "none" not in [n for n, _, _ in folds] and set(tested) == set(cells.cell_id[cells.method != "none"])
        else: assert set(tested) == set(cells.cell_id)
    # a split with a single group is skipped, not a crash
    one = make_synthetic_metadata(n_models=1, n_methods=1, n_levels=2, sources=("ideal",))
    assert group_folds(one, "arch_split") == [] and group_folds(one, "compr_split") == []
    p, m = cross_validate(one, "ideal", "arch_split", base_params=XGB, grid={})
    assert p.empty and m.empty

STRICT = {"mobilenet1": "preact_resnet", "densenet2": "plain_cnn"}

def _groups(d, kind):
    c = d.drop_duplicates("cell_id").set_index("cell_id")
    if kind in ("arch_split", "arch_family_strict"):
        return c.f_family.map(lambda f: P.STRICT_FAMILIES.get(f, f) if kind == "arch_family_strict" else f)
    return c.method if kind == "compr_split" else c.f_method_family

@pytest.mark.parametrize("kind", P.SPLITS)
def test_no_held_out_cell_architecture_or_method_reaches_training_or_tuning(syn, kind, monkeypatch):
    if kind == "arch_family_strict":     # resnet, preact_resnet and plain_cnn must leave together
        syn = make_synthetic_metadata(n_models=5, n_methods=3, n_levels=2, sources=("ideal",), seed=3)
        syn["f_family"] = syn.model.map(STRICT).fillna(syn.f_family)
    if kind == "compr_family":           # l1_filter and random_channels are both structured pruning: they leave together
        syn = make_synthetic_metadata(n_models=3, n_methods=6, n_levels=2, sources=("ideal",), seed=3)
    inner_seen, real_inner = [], P.inner_splits
    def inner_spy(train, k, *a, **kw):
        folds = real_inner(train, k, *a, **kw); inner_seen.append((k, train, folds)); return folds
    monkeypatch.setattr(P, "inner_splits", inner_spy)
    calls = []
    real_train, real_fit, real_lin = P.train_predictor, P.fit_models, P.linear_baseline
    def train_spy(df, *a, **k):
        calls.append({"cells": set(df.cell_id), "fits": []}); return real_train(df, *a, **k)
    def fit_spy(df, *a, **k):
        calls[-1]["fits"].append(df[["cell_id", "f_family", "method"]].copy()); return real_fit(df, *a, **k)
    def lin_spy(tr, te, *a, **k):
        calls[-1]["fits"].append(tr[["cell_id", "f_family", "method"]].copy()); return real_lin(tr, te, *a, **k)
    monkeypatch.setattr(P, "train_predictor", train_spy); monkeypatch.setattr(P, "fit_models", fit_spy)
    monkeypatch.setattr(P, "linear_baseline", lin_spy)
    preds, members = cross_validate(syn, "ideal", kind, base_params=XGB, grid={"max_depth": [2, 3]}, k=3, inner_folds=2)
    folds = sorted(preds.fold.unique())
    assert len(calls) == len(folds) >= 2
    for call, fold in zip(calls, folds):
        test = preds[preds.fold == fold]
        assert len(call["fits"]) >= 2 * 2 * 2 + 1   # the tuning grid (2 depths x 2 targets x 2 inner folds), the final fit, ridge
        assert not call["cells"] & set(test.cell_id)
        for rows in call["fits"]:
            assert not set(rows.cell_id) & set(test.cell_id)
            if kind == "arch_split": assert not set(rows.f_family) & set(syn.set_index("cell_id").loc[test.cell_id, "f_family"])
            if kind == "compr_split": assert not set(rows.method) & set(test.method)
            if kind != "random": assert not set(_groups(syn, kind)[rows.cell_id]) & set(_groups(syn, kind)[test.cell_id])
        tr = members[(members.fold == fold) & (members.role == "train")].cell_id
        assert set(tr) == call["cells"]
    if kind == "compr_family":
        assert "structured" in folds and set(preds[preds.fold == "structured"].method) == {"l1_filter", "random_channels"}
    if kind == "arch_family_strict":
        assert "resnet_like" in folds
        held = set(syn.set_index("cell_id").loc[preds[preds.fold == "resnet_like"].cell_id, "f_family"])
        assert held == {"resnet", "preact_resnet", "plain_cnn"}
    # the inner tuning / calibration folds are grouped like the outer split whenever the training fold has >= 2 groups
    # (the split-conformal widths recorded for 'random' and 'arch_split' fold the same training fold their own way)
    assert inner_seen and {k for k, _, _ in inner_seen} <= {kind, "random", "arch_split"} and kind in {k for k, _, _ in inner_seen}
    grouped = 0
    for k, train, folds in [t for t in inner_seen if t[0] == kind]:
        g = _groups(train, kind) if kind != "random" else None
        if kind == "random" or g[~train.drop_duplicates("cell_id").set_index("cell_id").method.eq("none")].nunique() < 2: continue
        for _, tr, te in folds:
            assert not set(g[tr]) & set(g[te]), (kind, set(g[tr]) & set(g[te]))
        grouped += 1
    assert kind == "random" or grouped > 0

def test_schema_mismatch_is_refused_with_names(tmp_path, syn):
    pred, _ = train_predictor(syn, "ideal", base_params=XGB, grid={}, targets=("acc",))
    path = save_predictor(pred, tmp_path / "pred" / "ideal.json")
    files = sorted(p.name for p in (tmp_path / "pred").iterdir())
    assert files == ["ideal.json", "ideal.mean.json", "ideal.quantile.json"]           # XGBoost JSON, no pickle
    side = json.loads(path.read_text())
    assert side["source"] == "ideal" and side["target"] == "acc" and side["schema"]["levels"]["f_method"]
    assert side["encoded_columns"][: len(side["schema"]["numeric"])] == side["schema"]["numeric"]
    json.loads((tmp_path / "pred/ideal.mean.json").read_text())                      # really JSON
    back = load_predictor(path)
    rows = syn[syn.applicable & (syn.source == "ideal")]
    for a, b in zip(pred.predict(rows), back.predict(rows)): np.testing.assert_allclose(a, b, rtol=1e-6)
    with pytest.raises(ValueError, match=r"missing columns \['f_macs'\]"): back.predict(rows.drop(columns="f_macs"))
    with pytest.raises(ValueError, match=r"unexpected columns \['f_extra'\]"): back.predict(rows.assign(f_extra=1.0))
    with pytest.raises(ValueError, match=r"non-numeric values in numeric columns \['f_macs'\]"): back.predict(rows.assign(f_macs="x"))
    with pytest.raises(FileNotFoundError, match="make predict"): load_predictor(tmp_path / "nope.json")

def test_measured_latency_is_never_a_predictor_input(syn):
    "A prediction must not depend on the machine's speed or load: latency stays in the table, out of the schema."
    d = syn.copy(); d["f_latency_b1_ms"] = 100 * d["y_test_acc"]; d["f_latency_b64_ms"] = 50 * d["y_test_acc"]   # a perfect leak
    pred, _ = train_predictor(d, "ideal", base_params=XGB, grid={}, targets=("acc",))
    assert not {"f_latency_b1_ms", "f_latency_b64_ms"} & set(pred.schema.columns)
    rows = d[d.applicable & (d.source == "ideal")]
    slower = rows.assign(f_latency_b1_ms=rows.f_latency_b1_ms[::-1].to_numpy() * 7, f_latency_b64_ms=3.0)
    np.testing.assert_array_equal(pred.predict(rows)[0], pred.predict(slower)[0])


def test_drop_target_adds_back_the_base_accuracy(syn):
    pred, _ = train_predictor(syn, "ideal", base_params=XGB, grid={}, targets=("drop",))
    rows = syn[syn.applicable & (syn.source == "ideal")]
    m, lo, hi = pred.predict(rows)
    raw = pred.mean_model.predict(pred.schema.encode(rows))
    np.testing.assert_allclose(m, np.clip(rows.y_base_test_acc.to_numpy() - raw, 0, 1), rtol=1e-6)
    assert (lo <= m).all() and (m <= hi).all()
    with pytest.raises(ValueError, match="y_base_test_acc"): pred.predict(rows.drop(columns="y_base_test_acc"))

def test_tuning_picks_drop_when_accuracy_is_base_minus_a_method_effect():
    # accuracy = model's base accuracy (wide spread, not visible in the features) - method/level effect:
    # only `drop` can be predicted from the features, so the inner CV must choose it
    d = make_synthetic_metadata(n_models=6, n_methods=4, n_levels=3, sources=("none",), seed=5)
    d = d[d.applicable].copy()
    base = {m: b for m, b in zip(sorted(d.model.unique()), np.linspace(0.3, 0.95, d.model.nunique()))}
    eff = d.method.map(lambda m: {"none": 0}.get(m, 0.2)) * d.level
    d["y_base_test_acc"] = d.model.map(base); d["y_test_acc"] = d.y_base_test_acc - eff
    d = d.drop(columns=["f_params", "f_size_bytes", "f_macs", "f_bops", "f_latency_b1_ms", "f_base_params", "f_family"])
    params, target, table = tune(d, XGB, {"max_depth": [2]}, inner_folds=3)
    assert target == "drop", table
    assert table.set_index("target").cv_mae["drop"] < 0.5 * table.set_index("target").cv_mae["acc"]

def test_scores_and_coverage_on_a_known_table():
    p = pd.DataFrame({"y_true": [0.5, 0.6, 0.7, 0.8], "pred": [0.5, 0.7, 0.7, 0.6], "lo": [0.4, 0.65, 0.6, 0.5],
                      "hi": [0.6, 0.8, 0.8, 0.7], "uncompressed": [0.8] * 4, "naive_proxy": [0.5, 0.6, 0.6, np.nan],
                      "linear": [0.6] * 4, "fold": ["a", "a", "b", "b"], "target": ["acc", "acc", "drop", "drop"]})
    s = score_predictions(p)
    assert s["mae"]["meta"] == pytest.approx(0.075) and s["mae"]["uncompressed"] == pytest.approx(0.15)
    assert s["mae"]["naive_proxy"] == pytest.approx(0.1 / 3) and s["mae"]["linear"] == pytest.approx(0.1)
    assert s["coverage"] == pytest.approx(0.5) and s["target"] == {"acc": 1, "drop": 1}
    # a target on an interval end is covered (closed interval)
    ends = p.assign(lo=[0.5, 0.6, 0.7, 0.5], hi=[0.6, 0.7, 0.8, 0.8])
    assert score_predictions(ends)["coverage"] == 1.0
    assert score_predictions(ends.assign(hi=[0.5, 0.6, 0.7, 0.79]))["coverage"] == 0.75

def test_intervals_cover_roughly_their_nominal_share(syn):
    p, _ = cross_validate(syn, "ideal", "random", base_params={"n_estimators": 60, "learning_rate": 0.1}, grid={}, k=4, targets=("acc",))
    cov = score_predictions(p)["coverage"]
    assert 0.5 <= cov <= 1.0 and (p.hi - p.lo).mean() > 0

def test_cross_validation_is_reproducible(syn):
    kw = dict(base_params=XGB, grid={"max_depth": [2, 3]}, k=3, inner_folds=2, seed=1)
    a, am = cross_validate(syn, "ideal", "random", **kw); b, bm = cross_validate(syn, "ideal", "random", **kw)
    pd.testing.assert_frame_equal(a, b); pd.testing.assert_frame_equal(am, bm)
    c, _ = cross_validate(syn, "ideal", "random", **{**kw, "seed": 2})
    assert not set(zip(a.fold, a.cell_id)) == set(zip(c.fold, c.cell_id))   # the seed moves the folds

def test_tuning_scores_each_inner_fold_on_cells_its_fit_never_saw(syn, monkeypatch):
    seen, real = [], P.fit_models
    monkeypatch.setattr(P, "fit_models", lambda df, *a, **k: (seen.append(set(df.cell_id)), real(df, *a, **k))[1])
    train = syn[syn.applicable & (syn.source == "ideal")]
    tune(train, XGB, {"max_depth": [2]}, targets=("acc", "drop"), inner_folds=3)
    assert len(seen) == 2 * 3
    for t in range(2):
        held = [set(train.cell_id) - s for s in seen[3 * t: 3 * t + 3]]
        assert all(held) and set().union(*held) == set(train.cell_id) and sum(map(len, held)) == train.cell_id.nunique()


def test_conformal_offset_reaches_nominal_coverage_on_synthetic_data():
    rng = np.random.default_rng(1)
    for nominal in (0.8, 0.9):
        x = rng.uniform(0, 1, 6000); y = x + rng.normal(0, 0.05 + 0.1 * x)          # heteroscedastic
        lo, hi = x - 0.02, x + 0.02                                                   # far too narrow
        off = P.conformal_offset(y[:3000], lo[:3000], hi[:3000], nominal)
        cov = np.mean(P.covered(y[3000:], lo[3000:] - off, hi[3000:] + off))
        assert abs(cov - nominal) <= 0.03, (nominal, cov)
        assert np.mean(P.covered(y[3000:], lo[3000:], hi[3000:])) < nominal - 0.3    # the raw interval under-covers
    # too wide an interval is narrowed (a negative offset), and the rank is ceil((n+1) coverage)
    assert P.conformal_offset(np.zeros(9), -np.ones(9), np.ones(9), 0.9) == -1.0
    assert P.conformal_offset(np.arange(9.0), np.zeros(9), np.zeros(9), 0.5) == 4.0   # rank ceil(10*0.5)=5 -> 5th smallest

def test_cross_validated_intervals_are_conformal_and_calibrated_proxy_is_monotone(syn):
    p, _ = cross_validate(syn, "ideal", "random", base_params={"n_estimators": 30, "learning_rate": 0.2}, grid={}, k=3, inner_folds=3)
    assert (p.lo <= p.lo_raw + 1e-12).all() or (p.conformal_offset < 0).any()
    s = score_predictions(p)
    assert {"coverage_raw", "interval_width_median", "interval_width_median_raw"} <= set(s) and "calibrated_proxy" in s["mae"]
    assert p.conformal_offset.nunique() == p.fold.nunique()          # one offset per training fold
    np.testing.assert_allclose(p.lo, np.clip(p.lo_raw - p.conformal_offset, 0, 1)); np.testing.assert_allclose(p.hi, np.clip(p.hi_raw + p.conformal_offset, 0, 1))
    assert (p.conformal_offset != 0).any()
    # the calibrated proxy: an isotonic map of f_src_acc fitted on the training cells only
    tr = pd.DataFrame({"f_src_acc": [0.1, 0.2, 0.3, 0.4], "y_test_acc": [0.3, 0.2, 0.6, 0.8]})
    te = pd.DataFrame({"f_src_acc": [0.15, 0.3, 0.9, np.nan]})
    np.testing.assert_allclose(P.calibrated_proxy(tr, te)[:3], [0.25, 0.6, 0.8]); assert np.isnan(P.calibrated_proxy(tr, te)[3])
    assert np.isnan(P.calibrated_proxy(tr.assign(f_src_acc=np.nan), te)).all()


def test_run_predict_writes_the_step_atomically_and_records_the_extract_budget(tmp_path, monkeypatch):
    monkeypatch.setenv("METACOMPRESS_DATA_DIR", str(tmp_path / "data")); monkeypatch.setenv("METACOMPRESS_FIGURES_DIR", str(tmp_path / "figs"))
    budget = {"recovery_steps": 2, "feature_batch": 256, "source_n": 20}
    (tmp_path / "figs/syn").mkdir(parents=True); (tmp_path / "figs/syn/extract_settings.json").write_text(json.dumps({"extract_budget": budget}))
    s = PredictSettings(synthetic=True, sources=["ideal"], splits=["random", "compr_split"], k_folds=2, inner_folds=2,
                        xgb={"n_estimators": 10}, grid={"max_depth": [2]}, targets=["acc"])
    paths = run_predict("syn", s, progress=False)
    assert all(p.is_file() for p in paths.values()) and {"predictions", "folds", "scores", "tuning", "predictor_ideal", "scatter"} <= set(paths)
    assert not list(tmp_path.rglob("*.tmp*"))                                          # nothing left half-written
    assert json.loads(paths["predictor_ideal"].read_text())["training"]["extract_budget"] == budget
    assert set(pd.read_parquet(paths["predictions"]).split) == {"random", "compr_split"}
    with pytest.raises(SettingsError, match="did you mean 'k_folds'"): PredictSettings.from_params({"k_fold": 3})



def test_abs_residual_is_the_conformal_quantile_of_out_of_fold_mean_errors(syn):
    "training.conformal.abs_residual[k] = the ceil((n+1)·nominal)-th smallest |y - mean| out of fold (folds grouped like k), by hand."
    pred, _ = train_predictor(syn, "ideal", base_params=XGB, grid={}, targets=("acc",), seed=0)
    rec = pred.meta["conformal"]["abs_residual"]; nominal = pred.meta["conformal"]["nominal"]
    assert set(rec) == {"random", "arch_split"}
    train = syn[syn.applicable.astype(bool) & (syn.source == "ideal")].reset_index(drop=True)
    for kind in rec:
        err = []
        for _, tr, te in inner_splits(train, kind, 3, 0):
            a, b = train[train.cell_id.isin(tr)], train[train.cell_id.isin(te)]
            sch, m, _ = fit_models(a, "acc", XGB, seed=0)
            err.append(np.abs(b["y_test_acc"].to_numpy(float) - np.clip(m.predict(sch.encode(b)), 0, 1)))
        e = np.sort(np.concatenate(err)); k = int(np.ceil((len(e) + 1) * nominal))
        assert rec[kind] == pytest.approx(e[min(k, len(e)) - 1], abs=1e-6), kind
