"""metacompress-recommend: errors, schema check, pre-recovery filtering, --write-model round trip, end to end on a model the zoo
lacks, the installed package from another directory."""
import json, os, shutil, subprocess, sys, zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from metacompress import recommend as R
from metacompress.data import CIFAR10_CLASSES
from metacompress.extract import FEATURES

torch.set_num_threads(1)
SMOKE_METHODS = "none,global_magnitude,svd,ptq_minmax"


def fake_metadata(n=40, seed=0, drop=None):
    "A meta-dataset with exactly extract.FEATURES' columns (random values), for training a small predictor."
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        r = {"cell_id": f"m{i % 4}|x|{i}|0", "model": f"m{i % 4}", "method": f"x{i % 3}", "level": float(i), "seed": 0,
             "source": "ideal", "applicable": True, "reason": ""}
        for c, d in zip(FEATURES.name, FEATURES.dtype):
            r[c] = f"v{i % 3}" if d == "str" else float(rng.normal())
        r["y_test_acc"] = float(rng.uniform(0.1, 0.9)); r["y_base_test_acc"] = 0.9
        rows.append(r)
    df = pd.DataFrame(rows)
    return df.drop(columns=[drop]) if drop else df


@pytest.fixture(scope="module")
def predictor_path(tmp_path_factory):
    from metacompress.predict import save_predictor, train_predictor
    from metacompress.core import step_params
    from metacompress.extract import extract_budget_record
    pred, _ = train_predictor(fake_metadata(), "ideal", base_params={"n_estimators": 5, "max_depth": 2}, grid={}, targets=("acc",))
    sec = step_params("smoke", "05_extract")        # as 06_predict records it: the budget the cells were measured with
    pred.meta["extract_budget"] = extract_budget_record(R.Budget.from_params(sec), R.FeatureSettings.from_params(sec, others=list(sec)), sec["source_n"])
    return save_predictor(pred, tmp_path_factory.mktemp("pred") / "predictor.json")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    "squeezenet1_1 (not in any zoo) briefly trained on toy 32x32 data; a labelled class-folder tree of the same data."
    from metacompress.finetune import build_model, train_model; from metacompress.testing import toy_split
    d = tmp_path_factory.mktemp("user")
    split = toy_split(96, num_classes=10, seed=0)
    model, _ = build_model("squeezenet1_1", 10, weights="none")
    train_model(model, split, max_steps=3, batch_size=32, progress=False, seed=0)
    torch.save(model.state_dict(), d / "sq.pt")
    for i, (x, y) in enumerate(zip(split.x[:64], split.y[:64])):
        (d / "imgs" / CIFAR10_CLASSES[int(y)]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(x.permute(1, 2, 0).numpy()).save(d / "imgs" / CIFAR10_CLASSES[int(y)] / f"{i}.png")
    return d


def args(trained, predictor_path, tmp_path, *extra, levels="first", quiet=True):
    "The command line of the tests: smoke profile, one level per method unless `levels` (None: the profile's, all)."
    return ["squeezenet1_1", "--checkpoint", str(trained / "sq.pt"), "--profile", "smoke", "--data", str(trained / "imgs"),
            "--predictor", str(predictor_path), "--methods", SMOKE_METHODS, "--work-dir", str(tmp_path / "work"),
            *(["--levels", levels] if levels else []), *(["--quiet"] if quiet else []), *extra]


# ---- constraints ----
def test_parse_amount_units():
    assert R.parse_amount("2MB") == 2e6 and R.parse_amount("500kB") == 5e5 and R.parse_amount("1.5MiB") == 1.5 * 2**20
    assert R.parse_amount("3G") == 3e9 and R.parse_amount("12") == 12.0 and R.parse_amount(None) is None
    with pytest.raises(R.RecommendError, match="cannot read amount"): R.parse_amount("2 parsecs")


def test_constraint_misses_are_relative():
    c = R.Constraint(max_size_bytes=1e6, min_ratio=2, max_macs=1e8, max_latency_ms=5, min_pred_acc=0.8)
    assert c.misses({"size_bytes": 9e5, "compression_ratio": 2.5, "macs": 1e8, "latency_ms": 4, "pred_acc": 0.9}) == {}
    m = c.misses({"size_bytes": 1.25e6, "compression_ratio": 1.6, "macs": 5e7, "latency_ms": 6, "pred_acc": 0.4})
    assert m.keys() == {"size_bytes", "compression_ratio", "latency_ms", "pred_acc"}
    assert abs(m["size_bytes"] - 0.25) < 1e-12 and abs(m["compression_ratio"] - 0.25) < 1e-12
    assert abs(m["latency_ms"] - 0.2) < 1e-12 and abs(m["pred_acc"] - 1.0) < 1e-12
    # the one NaN rule (constraints.Constraint): an unmeasured property fails its bound; static_only skips latency/accuracy
    assert c.misses({"size_bytes": 2e6, "latency_ms": 60}, static_only=True).keys() == {"size_bytes", "compression_ratio", "macs"}
    assert "compression_ratio >= 2" in c.describe()


# ---- errors, each one line naming the fix ----
def test_unknown_architecture_lists_close_names():
    with pytest.raises(R.RecommendError, match="unknown architecture 'squeezenet1_2'; did you mean squeezenet1_1"): R.load_user_model("squeezenet1_2", "x.pt")


def test_checkpoint_that_does_not_fit_names_keys(trained):
    with pytest.raises(R.RecommendError, match=r"does not fit resnet18: missing keys conv1.weight"): R.load_user_model("resnet18", str(trained / "sq.pt"))


def test_empty_and_unreadable_folders(tmp_path):
    m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(10))
    (tmp_path / "empty").mkdir()
    with pytest.raises(R.RecommendError, match="no images"): R.load_proxy(str(tmp_path / "empty"), m)
    with pytest.raises(R.RecommendError, match="does not exist"): R.load_proxy(str(tmp_path / "nope"), m)
    (tmp_path / "bad" / "cat").mkdir(parents=True); (tmp_path / "bad" / "cat" / "a.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(R.RecommendError, match="cannot decode image"): R.load_proxy(str(tmp_path / "bad"), m)


def test_unlabelled_folder_gets_pseudo_labels(tmp_path):
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 10, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    for i in range(4): Image.new("RGB", (32, 32), (60 * i, 10, 200 - 40 * i)).save(tmp_path / f"{i}.png")
    p = R.load_proxy(str(tmp_path), m)
    assert p.labels == "pseudo"
    assert torch.equal(p.eval.y, m(p.eval.inputs()).argmax(1))


def test_corrupt_predictor(tmp_path, predictor_path):
    (tmp_path / "p.json").write_text("{not json")
    with pytest.raises(R.RecommendError, match="corrupt or unreadable"): R.load_checked_predictor(tmp_path / "p.json")
    side = json.loads(Path(predictor_path).read_text())
    (tmp_path / "q.mean.json").write_text("garbage"); side["models"] = {"mean": "q.mean.json"}
    (tmp_path / "q.json").write_text(json.dumps(side))
    with pytest.raises(R.RecommendError, match="corrupt or unreadable"): R.load_checked_predictor(tmp_path / "q.json")
    with pytest.raises(R.RecommendError, match="does not exist"): R.load_checked_predictor(tmp_path / "missing.json")


def test_predictor_of_another_schema_is_refused(tmp_path):
    from metacompress.predict import save_predictor, train_predictor
    pred, _ = train_predictor(fake_metadata(drop="f_synflow"), "ideal", base_params={"n_estimators": 2}, grid={}, targets=("acc",))
    save_predictor(pred, tmp_path / "old.json")
    with pytest.raises(R.RecommendError, match=r"another feature schema.*unexpected columns \['f_synflow'\]"):
        R.load_checked_predictor(tmp_path / "old.json")


def test_ok_predictor_passes_the_check(predictor_path):
    assert R.load_checked_predictor(predictor_path).source == "ideal"


# ---- the work ----
def test_no_candidate_meets_names_closest(trained, predictor_path, tmp_path, capsys):
    assert R.main(args(trained, predictor_path, tmp_path, "--min-ratio", "1000")) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: no candidate can meet compression_ratio >= 1000") and "closest is ptq_minmax@" in err and "misses by" in err


def test_prefilter_never_recovers_a_candidate_that_cannot_meet_size(trained, predictor_path, tmp_path, monkeypatch):
    import metacompress.compress as C
    import metacompress.recovery as REC                                    # where compress's recovery calls train_model
    base_size = C.size_report(R.load_user_model("squeezenet1_1", str(trained / "sq.pt"))[0])["size_bytes"]
    recovered, cells = [], []
    real_train, real_cell = REC.train_model, R.candidate_cell
    monkeypatch.setattr(REC, "train_model", lambda m, *a, **k: recovered.append(k.get("max_steps")) or real_train(m, *a, **k))
    monkeypatch.setattr(R, "candidate_cell", lambda key, common: cells.append(key["method"]) or real_cell(key, common))
    t = R.run(R.build_parser().parse_args(args(trained, predictor_path, tmp_path, "--max-size", str(0.7 * base_size))))
    pre = t.attrs["prefilter"]
    dropped = set(pre[pre.dropped != ""].method)
    assert "none" in dropped and "svd" not in dropped                    # full size cannot meet 0.7x; svd at rank 0.5 can
    assert not dropped & set(cells) and set(cells) == set(pre[pre.dropped == ""].method)   # dropped ones never reach recovery
    assert len(recovered) == len(cells) and all(s == 2 for s in recovered)  # training only for the survivors, smoke's 2 steps
    assert set(t.method) <= set(cells)
    assert (t.size_bytes <= 0.7 * base_size).all()


def test_end_to_end_model_not_in_zoo(trained, predictor_path, tmp_path, capsys):
    "Acceptance: squeezenet1_1 (no zoo has it) runs end to end on the smoke profile; every ranked candidate satisfies the constraint."
    out = tmp_path / "rank.csv"
    assert R.main(args(trained, predictor_path, tmp_path, "--min-ratio", "1.5", "--max-latency-ms", "1000", "--out", str(out))) == 0
    text = capsys.readouterr().out
    assert "pred acc [interval]" in text and "pred drop [interval]" in text and "candidates meet the constraint" in text
    assert text.splitlines()[1].split()[:2] == ["-", "uncompressed"]              # the table starts with the uncompressed model
    t = pd.read_csv(out)
    assert t["rank"][0] == 0 and t.method[0] == "uncompressed" and t.compression_ratio[0] == 1
    base_acc = t.proxy_acc[0]
    t = t[t["rank"] > 0].reset_index(drop=True)
    assert np.allclose(t.pred_drop, base_acc - t.pred_acc) and (t.drop_lo <= t.pred_drop + 1e-12).all() and (t.pred_drop <= t.drop_hi + 1e-12).all()
    assert len(t) >= 1 and (t.compression_ratio >= 1.5).all() and (t.latency_ms <= 1000).all()
    assert list(t["rank"]) == list(range(1, len(t) + 1)) and (np.diff(t.pred_acc) <= 1e-12).all()
    assert ((t.pred_lo <= t.pred_acc) & (t.pred_acc <= t.pred_hi)).all()
    assert "none" not in set(t.method)


def test_write_model_round_trip(trained, predictor_path, tmp_path, capsys):
    path = tmp_path / "chosen.pt"
    assert R.main(args(trained, predictor_path, tmp_path, "--min-ratio", "3", "--write-model", str(path), "--out", str(tmp_path / "r.json"))) == 0
    blob = torch.load(path, weights_only=True)
    assert set(blob) == {"state_dict", "recipe", "check_logits"}
    model, rc = R.load_recommended(path)
    rows = json.loads((tmp_path / "r.json").read_text())
    assert rows[0]["method"] == "uncompressed"
    best = rows[1]
    assert (rc["method"], rc["level"]) == (best["method"], best["level"])
    sd = R.load_torch(tmp_path / "work" / "models" / f"{best['method']}_{float(best['level'])}.pt")
    x = torch.randn(4, 3, 32, 32)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())
    with torch.no_grad(): y = model(x)
    assert y.shape == (4, 10) and torch.isfinite(y).all()
    assert R.tensor_hash(*model.state_dict().values()) == rc["state_hash"]


def test_verify_measures_top_k_beside_predictions(trained, predictor_path, tmp_path, capsys):
    out = tmp_path / "v.csv"
    a = args(trained, predictor_path, tmp_path, "--min-ratio", "1.5", "--verify", "--verify-data", str(trained / "imgs"),
             "--out", str(out), "--workers", "2", "--write-model", str(tmp_path / "chosen.pt"))
    assert R.main(a) == 0
    assert "measured acc" in capsys.readouterr().out
    t = pd.read_csv(out)
    assert t.measured_acc.between(0, 1).all() and t.method[0] == "uncompressed"     # the uncompressed model measured too
    t = t[t["rank"] > 0].reset_index(drop=True)
    from metacompress.extract import logits_of
    model, rc = R.load_recommended(tmp_path / "chosen.pt")           # the written top-1, rebuilt: same accuracy as measured
    v = R.load_proxy(str(trained / "imgs"), model).eval
    assert (rc["method"], rc["level"]) == (t.method[0], t.level[0])
    assert abs(float((logits_of(model, v).argmax(1) == v.y).double().mean()) - t.measured_acc[0]) < 1e-9


def test_verify_needs_labels(trained, predictor_path, tmp_path, capsys):
    flat = tmp_path / "flat"; flat.mkdir()
    for i, p in enumerate(sorted((trained / "imgs").rglob("*.png"))[:3]): (flat / f"{i}.png").write_bytes(p.read_bytes())
    assert R.main(args(trained, predictor_path, tmp_path, "--verify", "--verify-data", str(flat))) == 2
    assert "--verify needs labelled data" in capsys.readouterr().err


def test_ranking_follows_predicted_accuracy(trained, tmp_path):
    "Rank 1 is the highest prediction; the interval columns come from the predictor; `none` (ratio 1) meets min_ratio 1."
    class Fake:
        source = "ideal"
        def predict(self, df):
            m = np.where(df.f_method.to_numpy() == "svd", 0.9, np.where(df.f_method.to_numpy() == "none", 0.2, 0.5))
            return m, m - 0.1, m + 0.1
    model, meta, _ = R.load_user_model("squeezenet1_1", str(trained / "sq.pt"))
    proxy = R.load_proxy(str(trained / "imgs"), model, n=20)
    from metacompress.compress import Budget
    run = lambda timing: R.recommend(model, proxy, Fake(), R.Constraint(min_ratio=1.0), meta=meta, methods=["none", "svd", "ptq_minmax"],
                                     levels="first", budget=Budget(recovery_steps=1, batch_size=16, calib_images=16, latency_repeats=1),
                                     work_dir=tmp_path / "w", progress=False, timing=timing)
    first, again = {}, {}
    t = run(first)
    assert list(t.method) == ["svd", "ptq_minmax", "none"] and list(t["rank"]) == [1, 2, 3]
    assert np.allclose(t.pred_hi - t.pred_acc, 0.1)
    # a second run reuses the finished candidates, and its timing says so (not a 0 s "compressed, recovered")
    assert run(again)["method"].tolist() == list(t.method)
    label = lambda d: next(k for k in d if k.startswith("candidates:"))
    assert "reused" not in label(first) and "3 of them reused" in label(again), (label(first), label(again))


def test_class_count_is_read_off_the_checkpoint(tmp_path):
    from metacompress.finetune import build_model
    m, _ = build_model("squeezenet1_1", 7, weights="none"); torch.save({"state_dict": m.state_dict()}, tmp_path / "sq7.pt")
    m2, _, rec = R.load_user_model("squeezenet1_1", str(tmp_path / "sq7.pt"))
    assert rec["num_classes"] == 7 and m2(torch.zeros(1, 3, 32, 32)).shape == (1, 7)
    with pytest.raises(R.RecommendError, match="holds no state dict"):
        torch.save({"a": 1}, tmp_path / "bad.pt"); R.load_user_model("squeezenet1_1", str(tmp_path / "bad.pt"))


def test_prefilter_slack_keeps_near_misses_only():
    "A candidate 3 % over the size bound passes a 5 % slack and fails a 0 % one; 10 % over fails both (the sign matters)."
    from metacompress.compress import Budget, accounting; from metacompress.testing import TinyNet
    from metacompress.testing import toy_split
    torch.manual_seed(0)
    model, train = TinyNet(width=4).eval(), toy_split(64)
    base = accounting(model, repeats=1)
    size = base["size_bytes"]
    def kept(over, slack):
        keep, table = R.prefilter(model, [("none", 0.0)], train, Budget(recovery_steps=0), R.Constraint(max_size_bytes=size / (1 + over)),
                                  base, slack=slack, progress=False)
        return bool(keep), table
    assert kept(0.03, 0.05)[0] and not kept(0.03, 0.0)[0]
    ok, table = kept(0.10, 0.05)
    assert not ok and "size_bytes misses by 10.0%" in table.dropped[0]


# ---- the whole level grid by default ----
def test_default_levels_answer_a_bound_between_two_levels(trained, predictor_path, tmp_path):
    "A ratio bound that 8-bit PTQ misses by 8 % is answered by the lower bit widths (levels: all, the profile's default), and 8 bits is never recovered."
    from metacompress.compress import Budget, compress
    from metacompress.testing import toy_split
    model = R.load_user_model("squeezenet1_1", str(trained / "sq.pt"))[0]
    r8 = compress(model, "ptq_minmax", 8, toy_split(16), R.dry_budget(Budget()))[1]["compression_ratio"]
    a = args(trained, predictor_path, tmp_path, "--min-ratio", str(1.08 * r8), levels=None)   # beyond the 5 % pre-filter slack
    a[a.index("--methods") + 1] = "ptq_minmax"
    t = R.run(R.build_parser().parse_args(a))
    pre = t.attrs["prefilter"]
    assert sorted(pre.level) == [2, 3, 4, 6, 8]                                # every level of the method's grid was tried
    assert "misses" in pre.dropped[pre.level == 8].item() and 8 not in set(t.level)
    assert set(t.level) == {2.0, 3.0, 4.0, 6.0} and (t.compression_ratio >= 1.08 * r8).all()


# ---- bad input: one line, exit status 2, no traceback ----
def _bad_zip(tmp_path):
    p = tmp_path / "notzip.zip"; p.write_text("just text"); return p

BAD = {
    "negative size": (["--max-size", "-5MB"], "--max-size -5e+06 is not a usable bound"),
    "zero size": (["--max-size", "0"], "--max-size 0 is not a usable bound"),
    "negative MACs": (["--max-macs", "-1"], "--max-macs -1 is not a usable bound"),
    "zero ratio": (["--min-ratio", "0"], "--min-ratio 0 is not a usable bound"),
    "accuracy in percent": (["--min-acc", "80"], "--min-acc 80 is above 1"),
    "bad amount": (["--max-size", "2 parsecs"], "cannot read amount"),
    "negative final steps": (["--final-steps", "-3"], "--final-steps -3 must be at least 0"),
    "bad input mean": (["--input-mean", "0.5,0.5"], "--input-mean '0.5,0.5'"),
    "bad --out suffix": (["--out", "table.txt"], "name a .csv or .json file"),
    "missing profile file": (["--profile", "/nowhere/mine.yaml"], "unknown profile '/nowhere/mine.yaml'"),
    "unknown method": (["--methods", "no_such_method"], "no_such_method"),
    "bad input range": (["--input-range", "0-100"], "argument --input-range: invalid choice: '0-100'"),
}

@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2(case, trained, predictor_path, tmp_path, capsys):
    extra, msg = BAD[case]
    a = args(trained, predictor_path, tmp_path)
    if extra[0] in a: i = a.index(extra[0]); a[i + 1] = extra[1]; extra = []     # replace, not repeat, a flag args() sets
    assert R.main(a + extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and msg in err[0], err


def test_bad_data_and_checkpoint_specs(trained, predictor_path, tmp_path, capsys):
    "zoo:<name> with --checkpoint is refused (never silently ignored); a text file named .zip is not a traceback."
    assert R.main(["zoo:resnet20_akamaster", "--checkpoint", str(trained / "sq.pt"), "--profile", "smoke",
                   "--predictor", str(predictor_path), "--quiet"]) == 2
    assert "--checkpoint cannot apply to zoo:resnet20_akamaster" in capsys.readouterr().err
    a = args(trained, predictor_path, tmp_path); a[a.index("--data") + 1] = str(_bad_zip(tmp_path))
    assert R.main(a) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a readable zip archive" in err[0]


def test_help_says_what_the_model_is_fed():
    h = " ".join(R.build_parser().format_help().split())
    assert "normalised with the data's per-channel mean/std" in h and "--input-range {0-1,0-255}" in h and "--final-steps" in h


# ---- the model's own inputs, the final fine-tune, a file that rebuilds in a fresh process ----
def test_input_adapter_final_steps_and_fresh_process_reload(trained, predictor_path, tmp_path, capsys):
    path = tmp_path / "chosen.pt"
    a = args(trained, predictor_path, tmp_path, "--min-ratio", "3", "--input-range", "0-255", "--input-std", "64",
             "--final-steps", "3", "--write-model", str(path), quiet=False)
    assert R.main(a) == 0
    cap = capsys.readouterr()
    assert "final: " in cap.out and "after 3 recovery steps" in cap.out and "where time went:" in cap.err and "total" in cap.err
    blob = torch.load(path, weights_only=True)
    rc = json.loads(blob["recipe"])
    assert rc["model"]["input"] == {"range": "0-255", "mean": [0.0, 0.0, 0.0], "std": [64.0, 64.0, 64.0]}
    assert rc["final"]["steps"] == 3 and rc["budget"]["recovery_steps"] == 3 and rc["ranking_budget"]["recovery_steps"] == 2
    # a fresh interpreter in another directory rebuilds the model and reproduces the logits it was written with
    # (the same `logits` as write_model: features.logits_of runs channels-last, other kernels, and on a fake-quantised
    # candidate a 1e-6 difference can move an activation across a rounding boundary: one quantisation step, not noise)
    code = ("import sys, torch; from metacompress.recommend import load_recommended, load_proxy, logits, N_CHECK;"
            "m, rc = load_recommended(sys.argv[1]); p = load_proxy(rc['data']['spec'], None, **{k: v for k, v in rc['data'].items() if k != 'spec'});"
            "torch.save(logits(m, p.eval[:N_CHECK]), sys.argv[2]); print(type(m).__name__, rc['rebuild'])")
    (tmp_path / "elsewhere").mkdir()
    r = subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "logits.pt")], cwd=tmp_path / "elsewhere",
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[0] == "Pretrained"                                 # the adapter is part of the rebuilt model
    assert R._same(torch.load(tmp_path / "logits.pt"), blob["check_logits"])   # the tolerance load_recommended itself checks


# ---- installed means usable anywhere ----
def test_profile_as_yaml_path_from_another_directory(trained, predictor_path, tmp_path, monkeypatch, capsys):
    "--profile takes a YAML file of the user's own; the command runs from a directory outside the checkout."
    from metacompress.core import load_profile
    prof = load_profile("smoke"); prof["08_recommend"]["predictor"] = "preds/mine.json"; prof["08_recommend"]["topk"] = 1
    (tmp_path / "preds").mkdir()
    for f in Path(predictor_path).parent.glob("predictor*.json"): shutil.copy(f, tmp_path / "preds" / f.name.replace("predictor", "mine"))
    side = json.loads((tmp_path / "preds" / "mine.json").read_text())
    side["models"] = {k: v.replace("predictor", "mine") for k, v in side["models"].items()}
    side["extract_budget"] = {"recovery_steps": 1, "source_n": 12}             # the budget the predictor learned under wins
    (tmp_path / "preds" / "mine.json").write_text(json.dumps(side))
    import yaml
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(prof))
    monkeypatch.chdir(tmp_path)
    a = ["squeezenet1_1", "--checkpoint", str(trained / "sq.pt"), "--profile", "mine.yaml", "--data", str(trained / "imgs"),
         "--methods", "svd", "--levels", "first", "--work-dir", "work", "--out", "t.csv"]
    assert R.main(a) == 0
    err = capsys.readouterr().err
    assert "preds/mine.json" in err and "ranking budget from the predictor file (recovery_steps=1, source_n=12)" in err
    t = pd.read_csv(tmp_path / "t.csv")
    assert list(t.method) == ["uncompressed", "svd"]


def test_installed_package_works_from_any_directory(tmp_path):
    "A wheel built from the checkout, unpacked on its own: profiles, manifest and quick predictor come from package data."
    root = Path(__file__).resolve().parents[1]
    src = tmp_path / "src"
    src.mkdir()
    for f in ("setup.py", "settings.ini", "README.md"): shutil.copy(root / f, src / f)
    shutil.copytree(root / "metacompress", src / "metacompress", ignore=shutil.ignore_patterns("__pycache__"))
    (src / "nbs").mkdir(); shutil.copy(root / "nbs" / "manifest.yaml", src / "nbs"); shutil.copytree(root / "nbs" / "profiles", src / "nbs" / "profiles")
    shutil.copytree(root / "figures" / "quick" / "predictor", src / "figures" / "quick" / "predictor")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "whl"), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    site = tmp_path / "site"
    zipfile.ZipFile(next((tmp_path / "whl").glob("metacompress-*.whl"))).extractall(site)
    away = tmp_path / "away"; away.mkdir()
    code = ("import metacompress, sys; from metacompress.core import load_profile, profiles_dir;"
            "from metacompress.recommend import default_predictor, load_checked_predictor, main;"
            "print(metacompress.__file__); print(profiles_dir()); print(load_profile('smoke')['08_recommend']['levels']);"
            "print(default_predictor('quick', 'ideal')); load_checked_predictor(default_predictor('quick', 'diffusion'));"
            "print(sys.exit(main(['zoo:x', '--checkpoint', 'a.pt', '--profile', 'smoke', '--quiet'])))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("METACOMPRESS_")} | {"PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", code], cwd=away, capture_output=True, text=True, env=env, timeout=300)
    out = r.stdout.splitlines()
    assert r.returncode == 2, (r.stdout, r.stderr[-2000:])                   # the console entry's exit status for a user error
    assert out[0].startswith(str(site)) and out[1].startswith(str(site)) and out[2] == "all"
    assert out[3].startswith(str(site)) and out[3].endswith("_figures/quick/predictor/ideal.json")
    assert r.stderr.strip().splitlines() == ["error: --checkpoint cannot apply to zoo:x: a zoo member is the profile's own fine-tuned model; "
                                             "drop --checkpoint, or pass the architecture (torchvision name or package.module:factory) with it"]


# ---- a practitioner's own module, run from its directory; --verify on a held-out half of a labelled folder ----
FACTORY = "from torchvision.models import squeezenet1_1\ndef factory(): return squeezenet1_1(num_classes=10)\n"

def test_factory_in_working_directory_verify_holdout_and_fresh_process_reload(trained, predictor_path, tmp_path, monkeypatch, capsys):
    "`mymodel:factory` found in the working directory; --verify without --verify-data holds half of the folder out; out.pt reloads elsewhere."
    here = tmp_path / "mine"; here.mkdir(); (here / "mymodel.py").write_text(FACTORY)
    monkeypatch.chdir(here)
    a = args(trained, predictor_path, tmp_path, "--verify", "--write-model", "out.pt", "--final-steps", "2", quiet=False)
    a[0] = "mymodel:factory"; a[a.index("--data") + 1] = os.path.relpath(trained / "imgs", here)   # relative, as typed
    assert R.main(a) == 0
    out = capsys.readouterr().out
    assert "measured on 32 labelled images" in out and "final: " in out                       # 64 images: 32 held out
    rc = json.loads(torch.load(here / "out.pt", weights_only=True)["recipe"])
    assert rc["model"]["module_root"] == str(here) and rc["data"]["holdout"] == 0.5 and rc["data"]["spec"] == str((trained / "imgs").resolve())
    p = R.load_proxy(str(trained / "imgs"), None, holdout=0.5)
    assert len(p.train) == len(p.test) == 32 and len(set(p.eval.y[:10].tolist())) > 1           # stratified: not one folder first
    code = ("import sys; from metacompress.recommend import load_recommended; m, rc = load_recommended(sys.argv[1]);"
            "print(rc['method'], type(m).__name__)")
    (tmp_path / "elsewhere").mkdir()
    r = subprocess.run([sys.executable, "-c", code, str(here / "out.pt")], cwd=tmp_path / "elsewhere", capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]                                                  # the module found via the recipe
    assert r.stdout.split()[0] == rc["method"]


def test_unimportable_factory_is_one_line(trained, predictor_path, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.py").write_text("import no_such_dependency_xyz\n")
    for spec, msg in (("no_such_module_xyz:factory", "no module 'no_such_module_xyz' installed or in the working directory"),
                      ("broken:factory", "install what the module needs"), ("json:no_such_fn", "has no callable 'no_such_fn'")):
        a = args(trained, predictor_path, tmp_path); a[0] = spec
        assert R.main(a) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], err


def test_interval_is_the_recorded_residual_one(predictor_path):
    "With training.conformal.abs_residual in the predictor file, the interval is prediction +- it (the arch split's first)."
    pred = R.load_checked_predictor(predictor_path)
    df = fake_metadata(6, seed=1)
    assert set(pred.meta["conformal"]["abs_residual"]) >= {"random", "arch_split"}     # train_predictor records them
    conf = {k: v for k, v in pred.meta["conformal"].items() if k != "abs_residual"}
    pred.meta = {**pred.meta, "conformal": conf}                                      # an older file: the quantile interval
    m, lo, hi, what = R.predictor_interval(pred, df)
    assert "quantile model" in what and np.allclose(m, pred.predict(df)[0])
    pred.meta = {**pred.meta, "conformal": {**conf, "abs_residual": {"random": 0.04, "arch_split": 0.07}}}
    m, lo, hi, what = R.predictor_interval(pred, df)
    assert np.allclose(hi - lo, np.minimum(m + 0.07, 1) - np.maximum(m - 0.07, 0)) and "0.070" in what and "arch_split" in what


def test_dry_accounting_skips_what_size_does_not_depend_on():
    from metacompress.compress import Budget
    b = R.dry_budget(Budget(recovery_steps=20, bn_images=256, calib_images=64))
    assert (b.recovery_steps, b.bn_images, b.calib_images, b.int8_deploy) == (0, 0, 8, False)
