"Recommendation evaluation: metrics on hand-made tables, ERM and the literal rule, the noise floor, problem isolation, and both notebooks end to end."
import json
import math
import numpy as np
import pandas as pd
import pytest
import metacompress.evaluate as E
from metacompress.constraints import Constraint, ConstraintError
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

def test_a_problem_is_a_scope_and_the_one_constraint_whose_unmeasured_properties_fail():
    p = Problem.of("m1", min_ratio=2, max_macs=5)
    assert p.constraint == Constraint(min_ratio=2, max_macs=5) and list(p.row()) == ["scope", *E.PROBLEM_BOUNDS]
    assert satisfies(cells(), p).tolist() == [False, True, True, False, False, False]
    assert not satisfies(cells(f_macs=np.nan), p).any()                       # unmeasured MACs fail a MAC bound
    assert satisfies(cells().drop(columns="f_bops"), Problem.of("any", min_ratio=2)).sum() == 4   # an unchecked column is not needed
    assert not satisfies(cells().drop(columns="f_bops"), Problem.of("any", max_bops=2)).any()     # a checked one that is absent fails
    with pytest.raises(ConstraintError, match="--min-ratio -1 is not a usable bound: pass a positive number"): Problem.of("m1", min_ratio=-1)
    row = {"size_bytes": 50.0, "compression_ratio": 2.0}
    assert Constraint(max_size_bytes=100, min_pred_acc=0.5).misses(row) == {"pred_acc": math.inf}
    assert Constraint(max_size_bytes=100, min_pred_acc=0.5).misses(row, static_only=True) == {}   # before recovery: not checked

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
    assert satisfies(c, Problem.of("m1", min_ratio=2)).tolist() == [False, True, True, False, False, False]
    assert satisfies(c, Problem.of("any", max_size_bytes=100, max_macs=5)).tolist() == [False, True, True, False, False, False]
    assert satisfies(c, Problem.of("any", min_src_acc=0.75)).tolist() == [True, True, False, True, False, False]
    # y_test_acc never decides candidacy
    assert (satisfies(c.assign(y_test_acc=0.0), Problem.of("any", min_ratio=2)) == satisfies(c, Problem.of("any", min_ratio=2))).all()
    ps = make_problems(c, {"ratios": [1, 2, 5, 20]}, min_candidates=2)
    assert Problem.of("any", min_ratio=20.0) not in ps and Problem.of("m1", min_ratio=5.0) not in ps    # < 2 candidates
    assert Problem.of("any", min_ratio=5.0) in ps and len(ps) == len({(p.scope, frozenset(c.cell_id[satisfies(c, p)])) for p in ps})

def test_static_erm_and_the_literal_rule():
    c = cells()
    probs = [Problem.of("m1", min_ratio=1), Problem.of("m2", min_ratio=1), Problem.of("m1", min_ratio=2), Problem.of("m2", min_ratio=2)]
    ranking, gaps = fit_erm(c, probs)
    # x: best where it applies (0, 0), a candidate in 2 of 4 problems (>= half the best coverage): first;
    # y: (.02, .19, 0, 0) -> .0525, learned as the fallback on the two problems x leaves (0, 0); slim+lsq4: .1775
    assert ranking == ["x", "y", "slim+lsq4"]
    assert gaps["x"] == pytest.approx(0.0) and gaps["y"] == pytest.approx(0.0525) and gaps["slim+lsq4"] == pytest.approx(0.1775)
    # a method in too few problems is never first, however good there: x in 1 of 4 (< half of y's 4 of 4)
    r2, _ = fit_erm(c, probs[:1] + [Problem.of("m1", min_ratio=2), Problem.of("m2", min_ratio=2), Problem.of("m1", min_ratio=2.5)])
    assert r2[0] == "y"
    m1 = c[c.model == "m1"].reset_index(drop=True)
    assert method_order(m1, ranking).tolist() == [0, 1, 2]
    assert method_order(m1, ["slim+lsq4"] + ranking).tolist() == [2, 0, 1]
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
    for key in ("n_rows", "n_cells", "n_models", "n_methods", "n_problems", "mae", "top1_gap", "topk_hit", "coverage", "per_source", "seconds",
                "contested", "problem_classes", "meta_minus_naive", "meta_minus_calibrated", "ci", "paper_scenario"):
        assert key in s, key
    b = s["per_source"]["ideal"]
    assert set(b["coverage"]["random"]) >= {"empirical", "nominal", "width"} and b["coverage"]["random"]["nominal"] == pytest.approx(0.9)
    assert set(b["problem_classes"]["random"]) == {"contested", "trivial", "hopeless", "open"}
    assert set(b["meta_minus_naive"]["random"]) == {"mean", "lo", "hi"} and b["meta_minus_naive"]["random"]["lo"] is not None
    assert set(b["ci"]["random"]["top1_gap"]["meta"]) == {"mean", "lo", "hi"}
    assert set(s["mae"]) >= {"random", "arch_split", "compr_split", "compr_family"}
    assert set(s["per_source"]) == {"ideal", "none"} and s["n_models"] == 2
    assert set(s["top1_gap"]["random"]) >= {"meta", "erm", "erm_seed_rule", "naive_proxy", "random", "noise_floor"}
    assert set(s["topk_hit"]["random"]["meta"]) == {"1", "3", "5"}
    assert {k: v for k, v in summaries[0].items() if k != "seconds"} == {k: v for k, v in summaries[1].items() if k != "seconds"}
    for f in ("predict_mae_per_method.png", "predict_scatter.png", "predict_importance.png", "recommendation.png",
              "predictor/ideal.json", "predictor/ideal.mean.json", "predictor/none.quantile.json"):
        assert (tmp_path / "figures/smoke" / f).is_file(), f

def test_any_model_rule_takes_the_most_accurate_uncompressed_model_and_falls_back():
    c = cells(y_base_test_acc=[0.99] * 3 + [0.95] * 3); preds = c[["cell_id"]].assign(pred=c.y_test_acc)
    r = evaluate_fold(c, preds, c.cell_id, c.cell_id, {"ratios": [1, 2]}, n_boot=0).set_index(["scope", "min_ratio"])
    # ERM ranking x, y, slim: at any/ratio>=1, x on m1 (0.99 uncompressed) -> a .82, not m2's larger d .91
    assert r.loc[("any", 1.0), "erm_gap"] == pytest.approx(0.91 - 0.82)
    # at ratio>=2 x has no candidate: fallback y on m1 -> b .80 (oracle .80); rule slim on m1 -> c .61
    assert r.loc[("any", 2.0), "erm_gap"] == pytest.approx(0.0) and r.loc[("any", 2.0), "erm_seed_rule_gap"] == pytest.approx(0.80 - 0.61)
    assert r.loc[("m2", 2.0), "erm_gap"] == pytest.approx(0.0)

def test_rank_by_uses_its_tiebreak_and_the_naive_proxy_ties_go_to_the_larger_cell():
    assert rank_by(np.array([0.5, 0.5, 0.4]), np.array([2.0, 1.0, 0.0])).tolist() == [1, 0, 2]
    assert rank_by(np.array([0.5, 0.5, np.nan])).tolist() == [0, 1, 2]
    c = cells(f_src_acc=[0.8, 0.8, 0.6, 0.9, 0.9, 0.2])          # ties on the eval source in both models
    c.loc[c.cell_id == "b", "y_test_acc"] = 0.70                # the smaller tied cell is the worse one
    r = evaluate_fold(c, c[["cell_id"]].assign(pred=0.5), c.cell_id, c.cell_id, {"ratios": [1]}, n_boot=0)
    np.testing.assert_allclose(r.naive_proxy_gap, 0, atol=1e-12)   # larger size first: a (100 B) and d (300 B)

def test_problems_dedup_by_candidate_set_and_caps_come_from_the_scope():
    c = cells()
    ps = make_problems(c, {"ratios": [1, 2, 2.5]}, min_candidates=2)     # >= 2 and >= 2.5: the same candidates
    assert [p for p in ps if p.scope == "m1"] == [Problem.of("m1", min_ratio=1.0), Problem.of("m1", min_ratio=2.0)]
    ps = make_problems(c, {"ratios": [1], "mac_fracs": [0.5]}, min_candidates=2)
    caps = {p.scope: p.constraint.max_macs for p in ps}
    assert caps == {"m1": 5.0, "m2": 15.0, "any": 15.0}     # half of each scope's own largest cell (m1: 10, m2 and any: 30)

def test_noise_floor_uses_each_candidates_own_n():
    from scipy.stats import binom
    p, q, n_q = 0.80, 0.79, 100                     # p measured on a huge set (no noise), q on 100 images
    flip = float(binom.sf(80, n_q, q) + 0.5 * binom.pmf(80, n_q, q))   # P(X_q / 100 > 0.80), a tie at 0.80 half the time
    est = noise_floor(np.array([p, q]), np.array([10 ** 8, n_q]), 40000, np.random.default_rng(0))
    assert est == pytest.approx((p - q) * flip, rel=0.05)
    assert E.noise_floor(np.array([0.9, 0.5]), np.array([1000, 1000]), 500, np.random.default_rng(0), seed_sd=0.3) > 0.05

def test_problem_classes_topk_and_tau_on_a_known_table():
    d = pd.DataFrame({"cell_id": list("abcdefgh"), "model": ["m1"] * 4 + ["m2"] * 4, "method": list("wxyz") * 2, "level": [0.5] * 8,
                      "f_size_bytes": [40., 30, 20, 10] * 2, "f_compression_ratio": [2.] * 8, "f_macs": [1.] * 8, "f_bops": [1.] * 8,
                      "f_latency_b1_ms": [1.] * 8, "f_src_acc": [0.8, 0.7, 0.6, 0.5, 0.1, 0.2, 0.3, 0.4],
                      "y_test_acc": [0.80, 0.79, 0.785, 0.5, 0.30, 0.20, 0.25, 0.10], "y_test_n": [10000] * 8,
                      "y_base_test_acc": [0.9] * 4 + [0.9] * 4})
    preds = d[["cell_id"]].assign(pred=d.y_test_acc, calibrated_proxy=d.f_src_acc)
    r = evaluate_fold(d, preds, d.cell_id, d.cell_id, {"ratios": [1]}, n_boot=0, ks=(1, 3, 5)).set_index("scope")
    assert r.problem_class.to_dict() == {"m1": "contested", "m2": "hopeless", "any": "contested"}
    assert r.loc["m1", "meta_tau"] == pytest.approx(1.0) and r.loc["m1", "naive_proxy_tau"] == pytest.approx(1.0)
    assert np.isnan(r.loc["m2", "meta_tau"])                          # tau only on contested problems
    assert r.loc["m1", "meta_hit3"] == 1.0 and np.isnan(r.loc["m1", "meta_hit5"])   # 4 candidates: no hit@5
    assert r.loc["any", "calibrated_proxy_gap"] == pytest.approx(0.0)
    r4 = evaluate_fold(d, preds, d.cell_id, d.cell_id, {"ratios": [1]}, n_boot=0, ks=(4,)).set_index("scope")
    assert np.isnan(r4.loc["m1", "meta_hit4"]) and np.isnan(r4.loc["m1", "random_hit4"]) and r4.loc["any", "meta_hit4"] == 1.0   # 4 candidates: hit@4 is certain
    s = summarize_problems(r.reset_index(), ks=(1, 3, 5))
    assert s["n_problems"] == 2 and s["topk_hit"]["meta"]["5"] == 1.0    # the hopeless one is dropped; hit@5 on `any` only

def test_cluster_bootstrap_interval_shrinks_with_more_models_and_pairs_differences():
    def rows(n):
        g = np.random.default_rng(n).uniform(0, 0.04, n)
        return pd.DataFrame({"scope": [f"m{i}" for i in range(n)], "problem_class": "open", "noise_floor": 0.0,
                             "meta_gap": g, "naive_proxy_gap": g + 0.01 * (np.arange(n) % 2), "calibrated_proxy_gap": g})
    ci = {n: E.cluster_bootstrap(rows(n), 300, np.random.default_rng(1)) for n in (6, 120)}
    w = {n: ci[n][("all", "top1_gap", "meta")][1] - ci[n][("all", "top1_gap", "meta")][0] for n in ci}
    assert w[120] < 0.4 * w[6]
    se = rows(120).meta_gap.std(ddof=0) / np.sqrt(120)                  # a 95 % interval is about 2 x 1.96 standard errors wide
    assert 0.75 * 2 * 1.96 * se < w[120] < 1.25 * 2 * 1.96 * se, (w[120], se)
    lo, hi = ci[120][("all", "meta_minus_naive")]; assert lo < -0.005 < hi and hi < 0
    assert ci[120][("all", "meta_minus_calibrated")] == (0.0, 0.0)
    # any-model problems are not rebuilt from the models drawn: their rows are drawn, their values as given
    anyr = pd.DataFrame({"scope": "any", "problem_class": "open", "noise_floor": 0.0, "meta_gap": [0.2, 0.4],
                         "naive_proxy_gap": 0.0, "calibrated_proxy_gap": 0.0})
    both = pd.concat([rows(4).assign(meta_gap=0.0), anyr], ignore_index=True)
    lo, hi = E.cluster_bootstrap(both, 200, np.random.default_rng(0))[("all", "top1_gap", "meta")]
    assert 0.4 / 6 - 1e-12 <= lo < E.problem_stats(both)[("all", "top1_gap", "meta")] < hi <= 0.8 / 6 + 1e-12   # point 0.1 = (0.2 + 0.4) / 6

def test_fold_scores_the_literal_rule_and_erm_separately():
    c = cells(); preds = c[["cell_id"]].assign(pred=c.y_test_acc)
    r = evaluate_fold(c, preds, c.cell_id, c.cell_id, {"ratios": [1]}, n_boot=0)
    assert r.scope.tolist() == ["m1", "m2", "any"] and r.erm_method.eq("x").all() and r.rule_applies.all()
    np.testing.assert_allclose(r.erm_gap, 0, atol=1e-12); np.testing.assert_allclose(r.meta_gap, 0, atol=1e-12)
    np.testing.assert_allclose(r.erm_seed_rule_gap, [0.82 - 0.61, 0.91 - 0.66, 0.91 - 0.66])   # slim+lsq4, mildest level
    np.testing.assert_allclose(r.naive_proxy_gap, [0.82 - 0.80, 0.0, 0.0])                      # f_src_acc prefers y on m1

def test_problem_classes_by_their_definitions():
    pc = E.problem_class
    assert pc([0.30, 0.40, 0.20], [0.9] * 3) == "hopeless"                # nothing above 0.45
    assert pc([0.40, 0.30], [0.95, 0.5]) == "trivial"                      # 0.30 > half of its own 0.5: not hopeless
    assert pc([0.80, 0.79, 0.785, 0.5], [0.9] * 4) == "contested"          # three within 2 pp, the oracle included
    assert pc([0.80, 0.79, 0.5], [0.9] * 3) == "open"                      # two within 2 pp, runner-up close
    assert pc([0.80, 0.70, 0.5], [0.9] * 3) == "trivial"                   # the oracle leads by 10 pp
    assert pc([0.40, 0.39, 0.395], [0.9, 0.7, 0.7]) == "open"              # close, but the oracle is under half its base

def test_erm_learns_each_fallback_on_the_problems_the_methods_before_it_leave():
    ct = pd.DataFrame({"cell_id": list("abcdefg"), "model": ["m"] * 7, "method": ["x", "x", "y", "y", "z", "z", "w"],
                       "level": [0.2, 0.5, 0.2, 0.5, 0.2, 0.5, 0.9], "f_size_bytes": [80., 50, 70, 40, 60, 30, 100],
                       "y_test_acc": [0.90, 0.80, 0.85, 0.84, 0.50, 0.40, 0.95], "f_compression_ratio": 1.0})
    probs = [Problem.of("m", max_size_bytes=s) for s in (100, 55, 45, 35)]
    ranking, gaps = fit_erm(ct, probs)
    # y: 3 of 4 problems, mean gap .033 (x: 2 of 4, .045; z: 4 of 4, .33; w: 1 of 4, too few to be first);
    # the only problem y leaves (size <= 35) has z alone: z is y's fallback; w, x follow by mean gap
    assert ranking == ["y", "z", "w", "x"]
    assert gaps["y"] == pytest.approx(0.1 / 3) and gaps["z"] == pytest.approx((0.45 + 0.44 + 0.44 + 0) / 4)
    order = method_order(ct[ct.f_size_bytes <= 35], ranking)
    assert ct[ct.f_size_bytes <= 35].reset_index(drop=True).cell_id[order[0]] == "f"

def test_seed_spread_is_the_median_per_cell_sd():
    sp = pd.DataFrame({"model": ["a"] * 6, "method": ["x", "x", "y", "y", "z", "z"], "level": [1.0] * 6,
                       "seed": [0, 1] * 3, "y_test_acc": [0.50, 0.52, 0.80, 0.80, 0.30, 0.40]})
    assert E.seed_spread(sp) == pytest.approx(np.std([0.50, 0.52], ddof=1))      # sds 0.014, 0, 0.071: the median
    assert E.seed_spread(None) == 0.0 and E.seed_spread(sp.iloc[::2]) == 0.0       # one seed per cell: no spread

@pytest.mark.parametrize("profile", ["smoke", "quick", "paper"])
def test_a_shipped_profiles_problems_do_not_depend_on_measured_latency(profile):
    """Latency is timed, not computed: two runs of the same code measure it differently, so a problem set that
    depends on it changes every headline between runs. The shipped sweeps must give the same problems under
    latencies 20 % apart, and a latency cap must say so."""
    from metacompress.core import load_profile
    sweep = load_profile(profile)["07_evaluate"]["problems"]
    c = E.cell_properties(make_synthetic_metadata(n_models=3, n_methods=4, n_levels=3, sources=("ideal",), seed=2), "ideal")
    jitter = np.random.default_rng(0).uniform(0.8, 1.2, len(c))
    assert make_problems(c, sweep) == make_problems(c.assign(f_latency_b1_ms=c.f_latency_b1_ms * jitter), sweep)
    with pytest.warns(UserWarning, match="latency_fracs: \\[null\\]"): make_problems(c, {"ratios": [1], "latency_fracs": [0.75]})
