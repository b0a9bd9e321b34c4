"""A new dataset: the smoke profile's fine-tune of a pretrained CIFAR-10 member on a small non-CIFAR ImageFolder tree
(four classes of synthetic, learnable 32x32 images) replaces the head and runs the transfer recipe (issue 22, point 5)."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metacompress.core import load_profile
from metacompress.data import Split, Splits, channel_stats, read_image_tree

torch.set_num_threads(1)
CLASSES = ("hstripes", "vstripes", "square", "disc")      # sorted folder names: not CIFAR-10's label set


def shape_image(kind: str, rng: np.random.Generator) -> np.ndarray:
    "A 32x32 RGB image of `kind` on a noisy background; colour, phase, position and size vary, so only the shape tells the class."
    bg, fg = rng.integers(0, 110, 3), rng.integers(150, 256, 3)
    a = np.empty((32, 32, 3), np.float64); a[:] = bg
    yy, xx = np.mgrid[:32, :32]
    period, phase = rng.integers(4, 8), rng.integers(0, 8)
    cy, cx, r = rng.integers(10, 22), rng.integers(10, 22), rng.integers(5, 9)
    mask = {"hstripes": (yy + phase) % period < period // 2, "vstripes": (xx + phase) % period < period // 2,
            "square": (abs(yy - cy) <= r) & (abs(xx - cx) <= r), "disc": (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r}[kind]
    a[mask] = fg
    return np.clip(a + rng.normal(0, 12, a.shape), 0, 255).astype(np.uint8)


def write_shapes_tree(root: Path, n_train: int = 48, n_test: int = 25, seed: int = 0) -> Path:
    "train/<class>/*.png and test/<class>/*.png: the ImageFolder layout 01_data reads."
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for c in CLASSES:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n): Image.fromarray(shape_image(c, rng)).save(root / split / c / f"{i:03d}.png")
    return root


def shapes_splits(tree: Path) -> Splits:
    d = read_image_tree(tree, 32, progress=False)
    mean, std = channel_stats(d["train_x"])
    sp = lambda x, y: Split(x, y, mean, std)
    test = sp(d["test_x"], d["test_y"])
    return Splits(sp(d["train_x"], d["train_y"]), test[::2], test[1::2], tuple(d["classes"]), "shapes-test-tree")


def test_smoke_finetune_transfers_a_pretrained_member_to_a_new_label_set(tmp_path, monkeypatch):
    if not os.environ.get("METACOMPRESS_WEIGHTS"): pytest.skip("METACOMPRESS_WEIGHTS is not set: the zoo member needs its pretrained file")
    from metacompress.finetune import FinetuneSettings, finetune_zoo, load_zoo_model, new_label_set, transfer_settings
    monkeypatch.setenv("METACOMPRESS_DATA_DIR", str(tmp_path / "data"))
    splits = shapes_splits(write_shapes_tree(tmp_path / "shapes"))
    assert new_label_set(splits) and splits.classes == tuple(sorted(CLASSES))
    section = {**load_profile("smoke")["02_finetune"], "pretrained": ["resnet20_akamaster"], "archs": [], "spread_members": [],
               "progress": False, "device": "cpu"}
    settings = FinetuneSettings.from_params(section)
    zoo = finetune_zoo("smoke", [], splits, settings)
    row = zoo.set_index("name").loc["resnet20_akamaster"]
    recipe = row["recipe"]
    tr = transfer_settings(settings.member_settings(), splits)
    assert recipe["transfer"] == tr and tr["steps"] >= 10 * settings.pt_steps      # the transfer recipe, not the CIFAR-10 touch-up
    model, meta = load_zoo_model("smoke", "resnet20_akamaster")
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    assert head.out_features == len(CLASSES)                                        # the head was replaced
    chance = 1 / len(CLASSES)
    assert row["test_acc"] >= chance + 0.35, f"test accuracy {row['test_acc']:.3f} is not well above chance {chance:.2f}"
