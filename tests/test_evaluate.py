"Recommendation evaluation: metrics on hand-made tables, ERM and the literal rule, the noise floor, problem isolation, and both notebooks end to end."
import json
import math
import numpy as np
import pandas as pd
import pytest
import metacompress.evaluate as E
from metacompress.evaluate import (Problem, evaluate_fold, fit_erm, gap_and_hits, make_problems, method_order,
                                   noise_floor, random_expectation, rank_by, satisfies, summarize_problems)
from metacompress.predict import make_synthetic_metadata

def cells(**over):
    d = pd.DataFrame({"cell_id": list("abcdef"), "model": ["m1"] * 3 + ["m2"] * 3,
                      "method": ["x", "y", "slim+lsq4", "x", "y", "slim+lsq4"], "level": [0.5] * 6,
                      "f_size_bytes": [100., 40, 10, 300, 120, 30], "f_compression_ratio": [1., 2.5, 10, 1, 2.5, 10],
                      "f_macs": [10., 5, 2, 30, 15, 6], "f_bops": [1.] * 6, "f_latency_b1_ms": [1.] * 6,
                      "f_src_acc": [0.80, 0.81, 0.60, 0.90, 0.70, 0.65], "y_test_acc": [0.82, 0.80, 0.61, 0.91, 0.72, 0.66],
                      "y_test_n": [10000] * 6})
    return d.assign(**over)

def test_gap_and_topk_on_a_known_ranking():
    acc = np.array([0.5, 0.9, 0.7, 0.8, 0.6, 0.4])
    order = rank_by(np.array([0.9, 0.1, 0.8, 0.7, 0.6, 0.5]))        # 0, 2, 3, 4, 5, 1
    g, h = gap_and_hits(acc, order, ks=(1, 3, 5, 6))
    assert g == pytest.approx(0.4) and h == {1: False, 3: False, 5: False, 6: True}
    g, h = gap_and_hits(acc, np.array([1, 0, 2, 3, 4, 5]))
    assert g == 0 and all(h.values())
    assert gap_and_hits(np.array([0.9, 0.9]), np.array([1, 0]), ks=(1,)) == (0.0, {1: True})   # oracle ties count as hits

def test_random_expectation_is_exact():
    acc = np.array([0.9, 0.8, 0.7, 0.6, 0.2])
    g, h = random_expectation(acc, ks=(1, 2, 5))
    assert g == pytest.approx(0.9 - 0.64) and h[1] == pytest.approx(0.2) and h[2] == pytest.approx(0.4) and h[5] == 1.0
    # brute force over all orderings of 4 candidates, two tying for best
    import itertools
    a = np.array([0.9, 0.9, 0.5, 0.4])
    hits = [gap_and_hits(a, np.array(p), ks=(2,))[1][2] for p in itertools.permutations(range(4))]
    assert random_expectation(a, ks=(2,))[1][2] == pytest.approx(np.mean(hits))

def test_constraints_filter_by_measured_properties_only():
    c = cells()
    assert satisfies(c, Problem("m1", min_ratio=2)).tolist() == [False, True, True, False, False, False]
    assert satisfies(c, Problem("any", max_size_bytes=100, max_macs=5)).tolist() == [False, True, True, False, False, False]
    assert satisfies(c, Problem("any", min_src_acc=0.75)).tolist() == [True, True, False, True, False, False]
    # y_test_acc never decides candidacy
    assert (satisfies(c.assign(y_test_acc=0.0), Problem("any", min_ratio=2)) == satisfies(c, Problem("any", min_ratio=2))).all()
    ps = make_problems(c, {"ratios": [1, 2, 5, 20]}, min_candidates=2)
    assert Problem("any", min_ratio=20.0) not in ps and Problem("m1", min_ratio=5.0) not in ps    # < 2 candidates
    assert Problem("any", min_ratio=5.0) in ps and len(ps) == len({(p.scope, frozenset(c.cell_id[satisfies(c, p)])) for p in ps})

def test_static_erm_and_the_literal_rule():
    c = cells()
    probs = [Problem("m1", min_ratio=1), Problem("m2", min_ratio=1), Problem("m1", min_ratio=2), Problem("m2", min_ratio=2)]
    ranking, gaps = fit_erm(c, probs)
    # x: .82/.91 best twice (0, 0), absent at ratio>=2 (charged worst: .80-.61=.19, .72-.66=.06) -> mean .0625
    # y: (.02, .19, 0, 0) -> .0525 ; slim+lsq4: (.21, .25, .19, .06) -> .1775
    assert ranking == ["y", "x", "slim+lsq4"]
    assert gaps["y"] == pytest.approx(0.0525) and gaps["x"] == pytest.approx(0.0625) and gaps["slim+lsq4"] == pytest.approx(0.1775)
    m1 = c[c.model == "m1"].reset_index(drop=True)
    assert method_order(m1, ranking).tolist() == [1, 0, 2]
    assert method_order(m1, ["slim+lsq4"] + ranking).tolist() == [2, 1, 0]
    # the mildest level that meets the constraint: the larger of two slim+lsq4 cells
    two = pd.concat([m1, m1.iloc[[2]].assign(cell_id="g", f_size_bytes=20.0, level=0.3)], ignore_index=True)
    assert method_order(two, ["slim+lsq4"])[0] == 3

def test_noise_floor_matches_the_binomial_flip_probability():
    from scipy.stats import binom
    p, q, n = 0.80, 0.79, 400
    k = np.arange(n + 1)
    flip = float(np.sum(binom.pmf(k, n, p) * binom.sf(k, n, q)))        # P(X_q > X_p): argmax moves to the worse one
    est = noise_floor(np.array([p, q]), np.array([n, n]), 40000, np.random.default_rng(0))
    assert est == pytest.approx((p - q) * flip, rel=0.05)
    assert noise_floor(np.array([0.9, 0.3]), np.array([1000, 1000]), 500, np.random.default_rng(0)) == 0.0

def test_summary_reports_gaps_below_the_floor():
    r = pd.DataFrame({"noise_floor": [0.02, 0.02], "meta_gap": [0.01, 0.02], "erm_gap": [0.2, 0.1], "random_gap": [0.3, 0.3],
                      "meta_hit1": [1.0, 0.0], "erm_hit1": [0.0, 0.0], "random_hit1": [0.2, 0.2], "rule_applies": [True, True]})
    s = summarize_problems(r, ks=(1,))
    assert s["below_floor"] == {"meta": True, "erm": False, "random": False}
    assert s["top1_gap"]["erm"] == pytest.approx(0.15) and s["topk_hit"]["meta"]["1"] == 0.5 and s["n_problems"] == 2
    assert "below floor" in E.fmt_gap(0.015, 0.02) and "below floor" not in E.fmt_gap(0.03, 0.02)

def test_held_out_problems_never_reach_erm_and_use_only_test_cells(monkeypatch):
    syn = make_synthetic_metadata(n_models=3, n_methods=4, n_levels=3, sources=("ideal",), seed=2)
    c = E.cell_properties(syn, "ideal")
    test_ids = set(c.cell_id[c.model == c.model.iloc[0]]); train_ids = set(c.cell_id) - test_ids
    seen = {"erm": [], "problems": []}
    real_erm, real_mp = E.fit_erm, E.make_problems
    monkeypatch.setattr(E, "fit_erm", lambda cc, pp: (seen["erm"].append(set(cc.cell_id)), real_erm(cc, pp))[1])
    monkeypatch.setattr(E, "make_problems", lambda cc, *a, **k: (seen["problems"].append(set(cc.cell_id)), real_mp(cc, *a, **k))[1])
    preds = c[c.cell_id.isin(test_ids)][["cell_id"]].assign(pred=0.5)
    r = evaluate_fold(c, preds, sorted(train_ids), sorted(test_ids), {"ratios": [1, 2, 4]}, n_boot=10)
    assert len(r) > 0 and set(r.scope) == {c.model.iloc[0]}
    assert seen["erm"] == [train_ids] and seen["problems"] == [train_ids, test_ids]

def test_evaluation_is_reproducible():
    syn = make_synthetic_metadata(n_models=3, n_methods=4, n_levels=3, sources=("ideal",), seed=2)
    c = E.cell_properties(syn, "ideal"); preds = c[["cell_id"]].assign(pred=c.y_test_acc + 0.01 * np.sin(np.arange(len(c))))
    run = lambda: evaluate_fold(c, preds, [], c.cell_id, {"ratios": [1, 2, 4], "size_quantiles": [0.5]}, n_boot=30,
                                rng=np.random.default_rng([0, 1]))
    pd.testing.assert_frame_equal(run(), run())

def test_both_notebooks_on_smoke_reproduce_summary_exactly(tmp_path, monkeypatch):
    from metacompress.run import run_step
    monkeypatch.setenv("METACOMPRESS_DATA_DIR", str(tmp_path / "data")); monkeypatch.setenv("METACOMPRESS_FIGURES_DIR", str(tmp_path / "figures"))
    (tmp_path / "data/metadata/smoke").mkdir(parents=True)
    make_synthetic_metadata(n_models=2, n_methods=3, n_levels=2, sources=("ideal", "none"), seed=4).to_parquet(
        tmp_path / "data/metadata/smoke/metadata.parquet")
    summaries = []
    for _ in range(2):
        run_step("predict", "smoke", progress=False); run_step("evaluate", "smoke", progress=False)
        summaries.append(json.loads((tmp_path / "figures/smoke/summary.json").read_text()))
    s = summaries[0]
    for key in ("n_rows", "n_cells", "n_models", "n_methods", "n_problems", "mae", "top1_gap", "topk_hit", "coverage", "per_source", "seconds"):
        assert key in s, key
    assert set(s["per_source"]) == {"ideal", "none"} and s["n_models"] == 2
    assert set(s["top1_gap"]["random"]) >= {"meta", "erm", "erm_seed_rule", "naive_proxy", "random", "noise_floor"}
    assert set(s["topk_hit"]["random"]["meta"]) == {"1", "3", "5"}
    assert {k: v for k, v in summaries[0].items() if k != "seconds"} == {k: v for k, v in summaries[1].items() if k != "seconds"}
    for f in ("predict_mae_per_method.png", "predict_scatter.png", "predict_importance.png", "recommendation.png",
              "predictor/ideal.json", "predictor/ideal.mean.json", "predictor/none.quantile.json"):
        assert (tmp_path / "figures/smoke" / f).is_file(), f

def test_fold_scores_the_literal_rule_and_erm_separately():
    c = cells(); preds = c[["cell_id"]].assign(pred=c.y_test_acc)
    r = evaluate_fold(c, preds, c.cell_id, c.cell_id, {"ratios": [1]}, n_boot=0)
    assert r.scope.tolist() == ["m1", "m2", "any"] and r.erm_method.eq("x").all() and r.rule_applies.all()
    np.testing.assert_allclose(r.erm_gap, 0, atol=1e-12); np.testing.assert_allclose(r.meta_gap, 0, atol=1e-12)
    np.testing.assert_allclose(r.erm_seed_rule_gap, [0.82 - 0.61, 0.91 - 0.66, 0.91 - 0.66])   # slim+lsq4, mildest level
    np.testing.assert_allclose(r.naive_proxy_gap, [0.82 - 0.80, 0.0, 0.0])                      # f_src_acc prefers y on m1
