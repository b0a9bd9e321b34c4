"train_model's short fine-tune mode: BatchNorm normalises by batch statistics but keeps its running statistics."
import torch, torch.nn as nn
from metacompress.finetune import train_model
from metacompress.testing import toy_split

def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

def test_bn_eval_keeps_running_statistics_and_momentum():
    m = _net(); before = m[1].running_mean.clone(), m[1].running_var.clone()
    train_model(m, toy_split(256), max_steps=5, batch_size=32, progress=False, bn_eval=True)
    assert torch.equal(before[0], m[1].running_mean) and torch.equal(before[1], m[1].running_var)
    assert m[1].momentum == 0.1                         # restored after training
    assert any((p != q).any() for p, q in zip(_net().parameters(), m.parameters()))  # the weights did train

def test_bn_eval_off_updates_running_statistics():
    m = _net(); before = m[1].running_mean.clone()
    train_model(m, toy_split(256), max_steps=5, batch_size=32, progress=False, bn_eval=False)
    assert not torch.equal(before, m[1].running_mean)

def test_bn_eval_still_normalises_by_batch_statistics():
    # in eval mode BatchNorm would use the running statistics: the training loss would differ from train mode's
    m = _net(); seen = []
    hook = m[1].register_forward_hook(lambda mod, i, o: seen.append(mod.training))
    train_model(m, toy_split(64), max_steps=1, batch_size=32, progress=False, bn_eval=True)
    hook.remove(); assert seen and all(seen)

def test_member_that_cannot_take_the_image_size_is_refused_by_name():
    import os, pytest
    from types import SimpleNamespace
    from metacompress.finetune import build_zoo_member
    if not os.environ.get("METACOMPRESS_WEIGHTS"): pytest.skip("METACOMPRESS_WEIGHTS is not set")
    splits = SimpleNamespace(mean=(0.5,) * 3, std=(0.25,) * 3, classes=tuple("abc"), image_size=48)
    with pytest.raises(ValueError, match="lenet_captum cannot take 48x48"): build_zoo_member("lenet_captum", splits)
    model, _ = build_zoo_member("resnet20_akamaster", splits)          # global pooling: any size
    assert model(torch.zeros(2, 3, 48, 48)).shape == (2, 3)

def test_run_finetune_writes_the_step_files_from_python(tmp_path, monkeypatch):
    "The step without papermill: run_finetune fine-tunes, checks and writes zoo.csv, zoo_seed_spread.csv and zoo.png."
    import pandas as pd, pytest
    from types import SimpleNamespace
    import metacompress.finetune as FT
    toy = SimpleNamespace(train=toy_split(64, 10, 32), test=toy_split(32, 10, 32, seed=1), classes=tuple("abcdefghij"),
                          data_hash="toy", image_size=32)
    monkeypatch.setenv("METACOMPRESS_DATA_DIR", str(tmp_path / "data")); monkeypatch.setenv("METACOMPRESS_FIGURES_DIR", str(tmp_path / "figs"))
    monkeypatch.setattr(FT, "load_splits", lambda profile: toy)
    settings = FT.FinetuneSettings.from_params({"archs": ["squeezenet1_1"], "weights": "none", "epochs": 1, "batch_size": 32,
                                                "progress": False, "spread_members": ["squeezenet1_1"], "spread_seeds": [1]})
    paths = FT.run_finetune("t", settings)
    assert set(paths) == {"zoo", "zoo_seed_spread", "zoo_png"} and all(p.is_file() for p in paths.values())
    assert pd.read_csv(paths["zoo"]).name.tolist() == ["squeezenet1_1"]
    assert sorted(pd.read_csv(paths["zoo_seed_spread"]).seed) == [0, 1]
    with pytest.raises(ValueError, match="min_test_acc=1.1"): FT.run_finetune("t", FT.FinetuneSettings(**{**vars(settings), "min_test_acc": 1.1}))
