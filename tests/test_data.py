"""Datasets: the embedded default, ImageFolder trees and archives, splits and seeds."""

import os
import tarfile

import pytest
import torch

from cmn_ext.data import build_datasets, make_loader


def test_digits_splits_are_deterministic_and_disjoint():
    a = build_datasets("digits", val_fraction=0.1, seed=3)
    b = build_datasets("digits", val_fraction=0.1, seed=3)
    assert (len(a.train), len(a.val), len(a.test)) == (1294, 144, 359)
    assert a.num_classes == 10 and a.input_size == (3, 32, 32)
    assert a.train.indices == b.train.indices and a.val.indices == b.val.indices
    assert not set(a.train.indices) & set(a.val.indices)
    x, y = a.test[0]
    assert x.shape == (3, 32, 32) and 0 <= y < 10
    c = build_datasets("digits", val_fraction=0.1, seed=4)
    assert c.val.indices != a.val.indices


def test_digits_augmentation_only_in_train():
    d = build_datasets("digits", val_fraction=0.1, seed=0)
    torch.manual_seed(0)
    views = {tuple(d.train[0][0].flatten()[:200].tolist()) for _ in range(8)}
    assert len(views) > 1  # random crops differ
    assert torch.equal(d.val[0][0], d.val[0][0]) and torch.equal(d.test[0][0], d.test[0][0])


def test_limit_and_no_val():
    d = build_datasets("digits", val_fraction=0.0, limit={"train": 50, "test": 20})
    assert d.val is None and len(d.train) == 50 and len(d.test) == 20
    with pytest.raises(ValueError, match="no 'val' split"):
        d.split("val")


def test_loader_is_seeded():
    d = build_datasets("digits", limit=64)
    first = [y.tolist() for _, y in make_loader(d.train, 16, train=True, seed=1)]
    again = [y.tolist() for _, y in make_loader(d.train, 16, train=True, seed=1)]
    assert first == again


def _make_tree(root, n=3, size=32):
    from PIL import Image

    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                color = (200, 50, 50) if cls == "cat" else (50, 50, 200)
                Image.new("RGB", (size, size), color).save(root / split / cls / f"{i}.jpg")


def test_imagefolder_tree_and_archive(tmp_path, monkeypatch):
    pytest.importorskip("torchvision")
    _make_tree(tmp_path / "tree")
    monkeypatch.setenv("CMN_DATA", str(tmp_path / "cache"))
    d = build_datasets(f"imagefolder:{tmp_path / 'tree'}", val_fraction=0.0)
    assert d.num_classes == 2 and len(d.train) == 6 and len(d.test) == 6 and d.input_size == (3, 32, 32)
    x, y = d.test[0]
    assert x.shape == (3, 32, 32) and y == 0
    archive = tmp_path / "tree.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "tree" / "train", arcname="train")
        tar.add(tmp_path / "tree" / "test", arcname="test")
    d2 = build_datasets(f"imagefolder:{archive}", val_fraction=0.0)
    assert len(d2.test) == 6 and (tmp_path / "cache" / "tree" / ".complete").exists()


def test_imagefolder_lists_every_undecodable_image_before_the_run(tmp_path, monkeypatch):
    pytest.importorskip("torchvision")
    monkeypatch.setenv("CMN_DATA", str(tmp_path / "cache"))
    _make_tree(tmp_path / "tree")
    first = sorted((tmp_path / "tree" / "train").rglob("*.*"))[0]
    first.write_bytes(first.read_bytes()[:40])  # truncated
    (tmp_path / "tree" / "test" / sorted(os.listdir(tmp_path / "tree" / "test"))[0] / "junk.png").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"2 of 13 images .* cannot be decoded") as e:
        build_datasets(f"imagefolder:{tmp_path / 'tree'}", val_fraction=0.0)
    assert str(first) in str(e.value) and "junk.png" in str(e.value)
    assert not (tmp_path / "cache" / "verified").exists()


def test_bad_specs(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        build_datasets("mnist")
    with pytest.raises(ValueError, match="needs a root"):
        build_datasets("imagefolder")
    with pytest.raises(FileNotFoundError, match="expected"):
        build_datasets(f"imagefolder:{tmp_path}")
    with pytest.raises(ValueError, match="'val_fraction'"):
        build_datasets("digits", val_fraction=1.0)
