"The data layer: real CIFAR-10 (needs METACOMPRESS_CIFAR10), any ImageFolder dataset, caches and the tree reader's defects (need nothing)."
import io, os, urllib.error, warnings, zipfile
from pathlib import Path
from unittest import mock
import numpy as np, pytest, torch
from PIL import Image
from metacompress import data as D
from metacompress.testing import write_tiny_tree

torch.set_num_threads(1)

@pytest.fixture
def ddir(tmp_path, monkeypatch):
    monkeypatch.setenv("METACOMPRESS_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"

def png(a) -> bytes:
    buf = io.BytesIO(); Image.fromarray(a).save(buf, format="PNG"); return buf.getvalue()

def rgb(seed, size=8):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)

def write_zip(path, files: dict) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for n, b in files.items(): z.writestr(n, b)
    return path

def tiny_files(classes=("cat", "dog"), n=2, seed=0):
    return {f"{sp}/{c}/{i}.png": png(rgb(seed * 1000 + hash((sp, c, i)) % 997)) for sp in ("train", "test") for c in classes for i in range(n)}

# ---------------------------------------------------------------- errors kept from before
def test_no_data_names_the_three_ways(ddir, monkeypatch):
    monkeypatch.delenv(D.ENV_CIFAR10, raising=False)
    with mock.patch("torchvision.datasets.CIFAR10", side_effect=urllib.error.URLError("no network")):
        with pytest.raises(D.DataError) as e: D.decode_cifar10()
    msg = str(e.value)
    assert "METACOMPRESS_CIFAR10" in msg and "cifar-10-batches-py" in msg and "download" in msg
    assert not list((ddir / "cache").glob("*.pt"))                   # nothing half-written

def test_env_pointing_nowhere(tmp_path, monkeypatch):
    monkeypatch.setenv(D.ENV_CIFAR10, str(tmp_path / "missing.zip"))
    with pytest.raises(D.DataError, match="does not exist"): D.resolve_cifar10_source()

def test_wrong_classes_refused(tmp_path, ddir, monkeypatch):
    monkeypatch.setenv(D.ENV_CIFAR10, str(write_tiny_tree(tmp_path / "tree")))
    with pytest.raises(D.DataError, match="not CIFAR-10"): D.decode_cifar10(progress=False)

def test_load_splits_without_make_data(ddir):
    with pytest.raises(FileNotFoundError, match="make data PROFILE=nope"): D.load_splits("nope")

def test_unknown_dataset_needs_a_source(ddir):
    with pytest.raises(D.DataError, match="no default source"): D.decode_dataset("mystery", None)
    with pytest.raises(D.DataError, match="METACOMPRESS_NOPE is not set"): D.decode_dataset("mystery", "env:METACOMPRESS_NOPE")

# ---------------------------------------------------------------- point 5: the defects, one test each
def test_replaced_zip_at_same_path_is_decoded_again(tmp_path, ddir, monkeypatch):
    z = tmp_path / "c10.zip"
    files = tiny_files(D.CIFAR10_CLASSES, n=1)
    write_zip(z, files); monkeypatch.setenv(D.ENV_CIFAR10, str(z))
    c1 = D.decode_cifar10(progress=False)
    assert D.decode_cifar10(progress=False) == c1                           # unchanged: reused
    x1 = torch.load(c1, weights_only=True)["train_x"]
    files["train/cat/0.png"] = png(np.zeros((8, 8, 3), np.uint8))          # same names, same count, new content
    write_zip(z, files)
    c2 = D.decode_cifar10(progress=False)
    x2 = torch.load(c2, weights_only=True)["train_x"]
    assert c2 != c1 and not torch.equal(x1, x2) and x2[3].sum() == 0       # cat is class 3
    D.build_splits("r", n_train=None, n_ideal=5, n_test=5, progress=False)
    assert torch.equal(D.load_splits("r").train.x.sort(0).values, x2.sort(0).values)

def test_source_key_sees_content_changes(tmp_path):
    t = write_tiny_tree(tmp_path / "t")
    k = D.source_key("tree", t, 8)
    assert D.source_key("tree", t, 8) == k and D.source_key("tree", t, 16) != k
    (t / "train/cat/000.png").write_bytes(png(rgb(99)))
    assert D.source_key("tree", t, 8) != k

def test_macos_zip_metadata_is_ignored(tmp_path, ddir):
    files = tiny_files()
    files.update({"__MACOSX/train/cat/._0.png": b"\x00\x05\x16\x07 AppleDouble", "train/cat/._1.png": b"\x00\x05\x16\x07",
                  "train/.DS_Store": b"junk"})
    with warnings.catch_warnings(): warnings.simplefilter("error"); t = D.read_image_tree(write_zip(tmp_path / "mac.zip", files), progress=False)
    assert t["train_x"].shape == (4, 3, 8, 8) and t["classes"] == ("cat", "dog") and t["dropped"] == {}

def test_files_nested_too_deep_are_a_counted_warning(tmp_path):
    files = tiny_files(); files["train/cat/extra/0.png"] = png(rgb(5)); files["train/cat/extra/1.png"] = png(rgb(6))
    with pytest.warns(UserWarning, match="2 files skipped: 2 nested deeper") as w:
        t = D.read_image_tree(write_zip(tmp_path / "deep.zip", files), progress=False)
    assert len([x for x in w if "skipped" in str(x.message)]) == 1
    assert len(t["train_y"]) == 4 and t["dropped"] == {"nested deeper than <split>/<class>/<image>": 2}

def test_unsupported_suffixes_are_a_counted_warning(tmp_path):
    t = write_tiny_tree(tmp_path / "t")
    for n in ("a.tif", "b.tif"): (t / "train/cat" / n).write_bytes(b"II*\x00")
    (t / "test/dog/c.gif").write_bytes(b"GIF89a")
    with pytest.warns(UserWarning) as w: r = D.read_image_tree(t, progress=False)
    msgs = [str(x.message) for x in w if "skipped" in str(x.message)]
    assert len(msgs) == 1 and "3 files skipped" in msgs[0] and "2 unsupported suffix '.tif'" in msgs[0] and "1 unsupported suffix '.gif'" in msgs[0]
    assert sum(r["dropped"].values()) == 3 and len(r["train_y"]) == 6

def test_class_empty_in_one_split_is_an_error_naming_it(tmp_path):
    t = write_tiny_tree(tmp_path / "t", classes=("ant", "bee", "cow"))
    for f in (t / "test/bee").iterdir(): f.rename(f.with_suffix(".gif"))    # bee has no readable test image
    with pytest.raises(D.DataError, match=r"class 'bee' has no images in test/"): D.read_image_tree(t, progress=False)
    t2 = write_tiny_tree(tmp_path / "t2", classes=("ant", "bee"))
    for f in (t2 / "train/ant").iterdir(): f.unlink()                       # an empty class folder
    with pytest.raises(D.DataError, match=r"class 'ant' has no images in train/"): D.read_image_tree(t2, progress=False)
    import shutil; shutil.rmtree(t2 / "train/ant")                          # the class folder missing in one split
    with pytest.raises(D.DataError, match=r"class 'ant' has no images in train/"): D.read_image_tree(t2, progress=False)

def test_16bit_png_is_scaled_not_saturated(tmp_path):
    a = np.array([[0, 257 * 64], [257 * 128, 65535]], dtype=np.uint16)
    x = D.decode_bytes(png(a), "g16.png")
    assert x.shape == (3, 2, 2) and x[0].tolist() == [[0, 64], [128, 255]] and torch.equal(x[0], x[2])

def test_negative_and_oversized_split_sizes_are_refused(tmp_path, ddir):
    t = write_tiny_tree(tmp_path / "t", n_per_class=4)
    kw = dict(dataset="tiny", source=str(t), image_size=8, progress=False)
    for bad, match in ((dict(n_train=-1, n_ideal=2, n_test=2), "n_train=-1"), (dict(n_train=2, n_ideal=-2, n_test=2), "n_ideal=-2"),
                       (dict(n_train=2, n_ideal=2, n_test=-1), "n_test=-1"), (dict(n_train=9, n_ideal=2, n_test=2), "n_train=9 > 8"),
                       (dict(n_train=2, n_ideal=9, n_test=None), "n_ideal=9 > 8"), (dict(n_train=2, n_ideal=4, n_test=5), "n_test=5 > 4"),
                       (dict(n_train=2.5, n_ideal=2, n_test=2), "integers"), (dict(n_train=2, n_ideal=None, n_test=2), "n_ideal=None")):
        with pytest.raises(D.DataError, match=match): D.build_splits("bad", **bad, **kw)
    assert not (ddir / "splits/bad.pt").exists()

# ---------------------------------------------------------------- point 0: splits that stay unseen
def test_splits_are_stratified_disjoint_and_record_their_sets(tmp_path, ddir):
    t = write_tiny_tree(tmp_path / "t", classes=("a", "b", "c", "d"), n_per_class=10, n_test_per_class=6)
    D.build_splits("s", n_train=20, n_ideal=8, n_test=12, dataset="tiny", source=str(t), image_size=8, progress=False)
    f = torch.load(ddir / "splits/s.pt", weights_only=True)
    assert f["index_into"] == {"train": "train", "ideal": "test", "test": "test"}
    assert "official train set" in f["provenance"]["trained_on"] and f["provenance"]["official"] == {"train": 40, "test": 24}
    s = D.load_splits("s")
    assert torch.bincount(s.ideal.y).tolist() == [2] * 4 and torch.bincount(s.test.y).tolist() == [3] * 4
    assert torch.bincount(s.train.y).tolist() == [5] * 4
    assert s.mean == pytest.approx((s.train.x.double() / 255).mean((0, 2, 3)).tolist(), abs=1e-12)   # on the train split only
    assert not set(f["indices"]["ideal"].tolist()) & set(f["indices"]["test"].tolist())
    # all splits' images distinct (random images are unique): no train image is an ideal or test image
    ident = lambda sp: {bytes(x.numpy()) for x in sp.x}
    tr, ide, te = ident(s.train), ident(s.ideal), ident(s.test)
    assert len(tr) == 20 and len(ide) == 8 and len(te) == 12 and not (tr & ide) and not (tr & te) and not (ide & te)
    assert set(torch.bincount(s.ideal.y[:4]).tolist()) == {1}                        # a prefix is class-balanced
    D.build_splits("s2", n_train=20, n_ideal=8, n_test=12, seed=1, dataset="tiny", source=str(t), image_size=8, progress=False)
    assert D.load_splits("s2").data_hash != s.data_hash                               # other indices, other hash

# ---------------------------------------------------------------- point 4: any dataset
def test_any_imagefolder_dataset_resized_gray_to_rgb_with_train_statistics(tmp_path, ddir):
    root = tmp_path / "three"
    g = np.random.default_rng(0)
    for sp, n in (("train", 6), ("val", 4)):
        for c in ("zebra", "apple", "moon"):
            (root / "wrapper" / sp / c).mkdir(parents=True)
            for i in range(n):
                a = g.integers(0, 256, (48, 64) if i == 0 else (48, 48, 3), dtype=np.uint8)   # one grayscale non-square image each
                Image.fromarray(a).save(root / "wrapper" / sp / c / f"{i}.png")
    D.build_splits("three", n_train=None, n_ideal=6, n_test=None, dataset="three", source=str(root), image_size=32, progress=False)
    s = D.load_splits("three")
    assert s.classes == ("apple", "moon", "zebra") and s.image_size == 32 and s.train.x.shape == (18, 3, 32, 32)
    assert (len(s.ideal), len(s.test)) == (6, 6)
    f = torch.load(ddir / "splits/three.pt", weights_only=True)
    x = s.train.x.double() / 255
    assert np.allclose(f["mean"], x.mean((0, 2, 3)).numpy(), atol=1e-9) and np.allclose(f["std"], x.std((0, 2, 3), unbiased=False).numpy(), atol=1e-9)
    for sp in (s.train, s.ideal, s.test): assert sp.mean == tuple(f["mean"]) and sp.std == tuple(f["std"])
    inp = s.train.inputs()
    assert torch.allclose(inp.mean((0, 2, 3)), torch.zeros(3), atol=1e-4) and torch.allclose(inp.std((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)
    gray = s.train.x[s.train.y == 0]
    assert any(torch.equal(im[0], im[1]) and torch.equal(im[1], im[2]) for im in gray)   # the grayscale image became RGB

def test_torchvision_datasets_by_name_offline_stand_ins(ddir):
    class FakeCIFAR100:
        classes = ["apple", "bear", "cloud"]
        def __init__(self, root, train=True, download=False):
            self.data = np.full((6 if train else 3, 32, 32, 3), 100 if train else 50, np.uint8); self.targets = [0, 1, 2] * (2 if train else 1)
    class FakeSVHN:
        def __init__(self, root, split="train", download=False):
            n = 20 if split == "train" else 10
            self.data = np.zeros((n, 3, 32, 32), np.uint8); self.labels = np.arange(n) % 10
    with mock.patch("torchvision.datasets.CIFAR100", FakeCIFAR100), mock.patch("torchvision.datasets.SVHN", FakeSVHN):
        D.build_splits("c100", n_train=None, n_ideal=3, n_test=None, dataset="cifar100", image_size=16, progress=False)
        D.build_splits("svhn", n_train=10, n_ideal=5, n_test=5, dataset="svhn", image_size=32, progress=False)
    c = D.load_splits("c100")
    assert c.classes == ("apple", "bear", "cloud") and c.image_size == 16 and len(c.train) == 6
    assert c.mean == pytest.approx((100 / 255,) * 3) and c.ideal.x.max() == 50 and len(c.test) == 0
    sv = D.load_splits("svhn")
    assert sv.classes == tuple(str(i) for i in range(10)) and len(sv.train) == 10 and len(set(sv.ideal.y.tolist())) == 5
    class FakeMNIST:                                                        # grayscale (N,H,W) at 28x28
        classes = [str(i) for i in range(3)]
        def __init__(self, root, train=True, download=False):
            self.data = torch.arange(4 * 28 * 28).reshape(4, 28, 28).remainder(256).to(torch.uint8); self.targets = torch.tensor([0, 1, 2, 0])
    with mock.patch("torchvision.datasets.MNIST", FakeMNIST):
        m = D.read_torchvision("MNIST", image_size=32, progress=False)
    assert m["train_x"].shape == (4, 3, 32, 32) and torch.equal(m["train_x"][:, 0], m["train_x"][:, 2])
    with mock.patch("torchvision.datasets.CIFAR100", side_effect=urllib.error.URLError("offline")):
        with pytest.raises(D.DataError, match="needs internet once.*ImageFolder"): D.decode_dataset("cifar100", None, 32, force=True)

def test_imagenet_folder_at_reduced_resolution(tmp_path, ddir):
    wn = ("n01440764", "n01443537")
    t = write_tiny_tree(tmp_path / "inet", classes=wn, size=40)
    os.rename(t / "test", t / "val")                                          # ImageNet's layout: train/ and val/
    D.build_splits("in", n_train=None, n_ideal=2, n_test=None, dataset="imagenet", source=str(t), image_size=16, progress=False)
    s = D.load_splits("in")
    assert s.classes == wn and s.image_size == 16 and (len(s.train), len(s.ideal), len(s.test)) == (6, 2, 4)
    torch.save(({wn[0]: ("tench",), wn[1]: ("goldfish",)}, []), t / "meta.bin")  # the folder torchvision's ImageNet reads
    assert D.resolve_source("imagenet", str(t))[0] == "imagenet"
    D.build_splits("in2", n_train=None, n_ideal=2, n_test=None, dataset="imagenet", source=str(t), image_size=16, progress=False)
    assert torch.equal(D.load_splits("in2").train.x.sort(0).values, s.train.x.sort(0).values)

def test_paper_imagenet_profile_is_valid():
    from metacompress.core import load_profile
    from metacompress.run import parameters_for
    p = parameters_for("data", "paper-imagenet")
    assert p["dataset"] == "imagenet" and p["source"] == "env:METACOMPRESS_IMAGENET" and p["image_size"] < 224
    assert set(load_profile("paper-imagenet")["01_data"]) == set(load_profile("smoke")["01_data"])

# ---------------------------------------------------------------- real CIFAR-10
def test_real_cifar10_cache_and_splits(cifar10_source, ddir):
    cache = D.decode_cifar10(progress=False)
    d = torch.load(cache, weights_only=True)
    assert d["train_x"].shape == (50_000, 3, 32, 32) and d["test_x"].shape == (10_000, 3, 32, 32)
    assert d["train_x"].dtype == torch.uint8 and d["dropped"] == {}
    assert torch.bincount(d["train_y"]).tolist() == [5000] * 10 and torch.bincount(d["test_y"]).tolist() == [1000] * 10
    assert tuple(d["classes"]) == D.CIFAR10_CLASSES
    mtime = cache.stat().st_mtime
    assert D.decode_cifar10() == cache and cache.stat().st_mtime == mtime      # decoded once, reused
    assert D.tensor_hash(d["train_x"], d["train_y"], d["test_x"], d["test_y"]) == d["data_hash"]   # hash is of the content
    D.build_splits("q", n_train=None, n_ideal=5000, n_test=5000, seed=0)
    s = D.load_splits("q")
    assert (len(s.train), len(s.ideal), len(s.test)) == (50_000, 5_000, 5_000)
    assert torch.bincount(s.ideal.y).tolist() == [500] * 10 and torch.bincount(s.test.y).tolist() == [500] * 10
    assert s.classes == D.CIFAR10_CLASSES and s.image_size == 32 and s.index_into == D.INDEX_INTO
    # statistics computed on the whole train split equal the published CIFAR-10 ones
    assert s.mean == pytest.approx(D.CIFAR10_MEAN, abs=1e-4) and s.std == pytest.approx(D.CIFAR10_STD, abs=1e-4)
    # no train image (the zoo's pretraining set) is an ideal or test image; ideal and test are disjoint
    train_ids = {bytes(x.numpy()) for x in d["train_x"]}
    ideal_ids, test_ids = {bytes(x.numpy()) for x in s.ideal.x}, {bytes(x.numpy()) for x in s.test.x}
    assert not (ideal_ids & train_ids) and not (test_ids & train_ids) and not (ideal_ids & test_ids)
    D.build_splits("q2", n_train=None, n_ideal=5000, n_test=5000, seed=0)
    assert torch.equal(D.load_splits("q2").ideal.y, s.ideal.y)                  # same seed, same split
    d["data_hash"] = "0" * 16; torch.save(d, cache)                              # a changed cache is noticed
    with pytest.raises(D.DataError, match="changed"): D.load_splits("q")

# ---------------------------------------------------------------- issue 23: caches that notice, 16-bit scaling by rounding
def test_replaced_folder_image_with_same_size_and_mtime_is_a_new_key(tmp_path):
    t = write_tiny_tree(tmp_path / "t")
    f = t / "train/cat/000.png"; st = f.stat(); k = D.source_key("tree", t, 8)
    new = bytearray(f.read_bytes()); new[-20] ^= 0xFF                 # same size, different content
    f.write_bytes(bytes(new)); os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))   # and the old mtime
    assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns
    assert D.source_key("tree", t, 8) != k
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))          # a touch alone keeps the key
    k2 = D.source_key("tree", t, 8); f.touch(); assert D.source_key("tree", t, 8) == k2

def test_stale_caches_are_reported_and_cleaned(tmp_path, ddir, monkeypatch, capsys):
    z = tmp_path / "c10.zip"; files = tiny_files(D.CIFAR10_CLASSES, n=1)
    write_zip(z, files); monkeypatch.setenv(D.ENV_CIFAR10, str(z))
    D.build_splits("r", n_train=None, n_ideal=5, n_test=5, progress=False)
    assert D.cache_report() == ([], 0)
    files["train/cat/0.png"] = png(np.zeros((8, 8, 3), np.uint8)); write_zip(z, files)
    with pytest.warns(UserWarning, match="1 cache file.*no split file uses.*make clean-cache"):
        D.build_splits("r", n_train=None, n_ideal=5, n_test=5, progress=False)
    stale, size = D.cache_report()
    assert len(stale) == 1 and size == stale[0].stat().st_size > 0
    assert D.clean_cache() == stale and not stale[0].exists()
    assert "1 stale cache file(s)" in capsys.readouterr().out
    D.load_splits("r")                                                  # the cache in use stays

def _png16(a: np.ndarray, filters) -> bytes:
    "A 16-bit RGB PNG written with the given row filters (0-4), as encoders do (PIL cannot write one)."
    import struct, zlib
    raw = [r.astype(">u2").tobytes() for r in a]; bpp = 6; out = b""
    def paeth(l, u, ul):
        p = l + u - ul; pa, pb, pc = abs(p - l), abs(p - u), abs(p - ul)
        return l if pa <= pb and pa <= pc else u if pb <= pc else ul
    for y, r in enumerate(raw):
        f = filters[y % len(filters)]; prev = raw[y - 1] if y else bytes(len(r)); row = bytearray()
        for x in range(len(r)):
            l = r[x - bpp] if x >= bpp else 0; u = prev[x]; ul = prev[x - bpp] if x >= bpp else 0
            pred = [0, l, u, (l + u) // 2, paeth(l, u, ul)][f]
            row.append((r[x] - pred) & 255)
        out += bytes([f]) + bytes(row)
    chunk = lambda k, d: struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", a.shape[1], a.shape[0], 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(out)) + chunk(b"IEND", b""))

def test_16bit_rgb_png_is_scaled_by_rounding():
    a = np.random.default_rng(0).integers(0, 65536, (5, 7, 3)).astype(np.uint16)
    a[0, 0] = (16383, 65535, 128)                                       # 16383/257 = 63.7: rounds to 64 (truncation gives 63)
    want = np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8)
    for filters in ([0], [1], [2], [3], [4], [0, 1, 2, 3, 4]):
        got = D.decode_bytes(_png16(a, filters), "x16").permute(1, 2, 0).numpy()
        assert np.array_equal(got, want), filters
    assert got[0, 0].tolist() == [64, 255, 0]
    assert D.png_rgb16(png(rgb(1))) is None                             # 8-bit PNGs stay with PIL
