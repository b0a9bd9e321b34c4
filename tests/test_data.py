"The CIFAR-10 layer on real data (needs METACOMPRESS_CIFAR10) and its errors (need nothing)."
import os, urllib.error
from unittest import mock
import pytest, torch
from metacompress import data as D

def test_no_data_names_the_three_ways(tmp_path, monkeypatch):
    monkeypatch.delenv(D.ENV_CIFAR10, raising=False)
    monkeypatch.setenv("METACOMPRESS_DATA_DIR", str(tmp_path))
    with mock.patch("torchvision.datasets.CIFAR10", side_effect=urllib.error.URLError("no network")):
        with pytest.raises(D.DataError) as e: D.decode_cifar10()
    msg = str(e.value)
    assert "METACOMPRESS_CIFAR10" in msg and "cifar-10-batches-py" in msg and "download" in msg
    assert not (tmp_path / "cache" / "cifar10.pt").exists()          # nothing half-written

def test_env_pointing_nowhere(tmp_path, monkeypatch):
    monkeypatch.setenv(D.ENV_CIFAR10, str(tmp_path / "missing.zip"))
    with pytest.raises(D.DataError, match="does not exist"): D.resolve_cifar10_source()

def test_wrong_classes_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(D.ENV_CIFAR10, str(D.write_tiny_tree(tmp_path / "tree")))
    monkeypatch.setenv("METACOMPRESS_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(D.DataError, match="not CIFAR-10"): D.decode_cifar10(progress=False)

def test_load_splits_without_make_data(tmp_path, monkeypatch):
    monkeypatch.setenv("METACOMPRESS_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="make data PROFILE=nope"): D.load_splits("nope")

def test_real_cifar10_cache_and_splits(cifar10_source, tmp_path, monkeypatch):
    monkeypatch.setenv("METACOMPRESS_DATA_DIR", str(tmp_path))
    cache = D.decode_cifar10(progress=False)
    d = torch.load(cache, weights_only=True)
    assert d["train_x"].shape == (50_000, 3, 32, 32) and d["test_x"].shape == (10_000, 3, 32, 32)
    assert d["train_x"].dtype == torch.uint8
    assert torch.bincount(d["train_y"]).tolist() == [5000] * 10 and torch.bincount(d["test_y"]).tolist() == [1000] * 10
    assert tuple(d["classes"]) == D.CIFAR10_CLASSES
    sample = torch.randperm(50_000, generator=torch.Generator().manual_seed(0))[:5000]
    mean = d["train_x"][sample].float().mean((0, 2, 3)) / 255       # the README's measured channel means
    assert torch.allclose(mean, torch.tensor([0.490, 0.482, 0.450]), atol=0.01)
    mtime = cache.stat().st_mtime
    assert D.decode_cifar10() == cache and cache.stat().st_mtime == mtime      # decoded once, reused
    h = d["data_hash"]
    assert D.tensor_hash(d["train_x"], d["train_y"], d["test_x"], d["test_y"]) == h   # hash is of the content
    D.build_splits("q", n_train=None, n_ideal=5000, n_test=None, seed=0)
    s = D.load_splits("q")
    assert (len(s.train), len(s.ideal), len(s.test)) == (45_000, 5_000, 10_000)
    assert torch.bincount(s.ideal.y).tolist() == [500] * 10
    # ideal and train are disjoint: no ideal image appears among the training images
    ti = {bytes(x.numpy()) for x in s.ideal.x[:500]}
    assert not any(bytes(x.numpy()) in ti for x in s.train.x[:20000])
    D.build_splits("q2", n_train=None, n_ideal=5000, n_test=None, seed=0)
    assert torch.equal(D.load_splits("q2").train.y, s.train.y)                # same seed, same split
    # a changed cache is noticed
    d["data_hash"] = "0" * 16; torch.save(d, cache)
    with pytest.raises(D.DataError, match="changed"): D.load_splits("q")
