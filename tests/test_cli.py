"""The cmn command line: train / compress / eval / convert from configs with overrides, JSON on stdout."""

import glob
import json
import os

import pytest

from cmn_ext.cli import main
from cmn_ext.cascade import pipeline as cascade_pipeline
from cmn_ext.config import apply_overrides, dump, load_config
from cmn_ext.search import pipeline as search_pipeline

pytestmark = pytest.mark.slow  # pipeline runs; `pytest -m "not slow"` is the kernel suite

ROOT = os.path.join(os.path.dirname(__file__), "..")
SHARED = os.path.join(ROOT, "..", "shared")
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml")))
TINY = ["data.limit={train: 48, val: 16, test: 32}", "train.epochs=1", "train.batch_size=16", "train.schedule=none"]


def _json(capsys):
    out = capsys.readouterr().out
    return json.loads(out)


def test_overrides_are_yaml_typed():
    cfg = apply_overrides({"train": {"lr": 0.1}}, ["train.lr=1e-3", "prune.ratio=0.5", "quant=null", "a.b.c=[1, 2]"])
    assert cfg["train"]["lr"] == 1e-3 and cfg["prune"] == {"ratio": 0.5} and cfg["quant"] is None
    assert cfg["a"]["b"]["c"] == [1, 2]
    with pytest.raises(ValueError, match="expected key=value"):
        apply_overrides({}, ["train.lr"])


@pytest.mark.parametrize("path", CONFIGS + [cascade_pipeline.DEFAULT_CONFIG, search_pipeline.DEFAULT_CONFIG],
                         ids=os.path.basename)
def test_shipped_configs_load_and_round_trip(path, tmp_path):
    """Every shipped config loads, and its resolved form (what a run directory's config.yaml holds) loads back
    to the same typed config."""
    cfg = load_config(path)
    assert cfg.model.name and cfg.train.epochs >= 1
    again = tmp_path / "config.yaml"
    again.write_text(dump(cfg))
    assert load_config(str(again)) == cfg


def test_unknown_config_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("modell: {name: resnet20}\n")
    with pytest.raises(ValueError, match=r"unknown key .modell. \(did you mean .model.\?\)"):
        load_config(str(p))


def test_train_eval_convert_roundtrip(tmp_path, capsys):
    run = tmp_path / "run"
    cfg = os.path.join(ROOT, "configs", "apot4_resnet20.yaml")
    assert main(["train", cfg, *TINY, f"run_dir={run}", "--json", "--no-progress"]) == 0
    summary = _json(capsys)
    assert summary["test"]["n"] == 32 and 0 <= summary["test"]["top1"] <= 1
    assert summary["convert"]["kernels"] == {"int8": 2, "apot": 18}
    assert summary["convert"]["check"]["argmax_agree"] == 1.0
    for f in ("config.yaml", "metrics.jsonl", "metrics.csv", "last.pt", "best.pt", "final.pt", "deploy.pt",
              "summary.json", "table.md"):
        assert (run / f).exists(), f

    assert main(["eval", "--weights", str(run / "final.pt"), "data.limit={test: 32}", "--json", "--no-progress"]) == 0
    ev = _json(capsys)
    assert {"top1", "top5", "n", "macs", "params"} <= set(ev) and ev["n"] == 32
    assert ev["top1"] == pytest.approx(summary["test"]["top1"])
    assert ev["bops"] < ev["macs"] * 32 * 32 / 50  # 4-bit layers

    assert main(["eval", "--weights", str(run / "deploy.pt"), "data.limit={test: 32}", "--json", "--no-progress"]) == 0
    dev = _json(capsys)
    assert dev["kind"] == "deploy" and dev["top1"] == pytest.approx(ev["top1"], abs=1 / 32)

    out = tmp_path / "again.pt"
    assert main(["convert", "--checkpoint", str(run / "best.pt"), "--out", str(out), "--batches", "1", "--json"]) == 0
    conv = _json(capsys)
    assert out.exists() and conv["check"]["argmax_agree"] == 1.0


def test_compress_prunes_removes_and_prints_a_table(tmp_path, capsys):
    run = tmp_path / "c"
    args = ["compress", *TINY, "quant={weight: {kind: dorefa, bits: 8}, act: {kind: dorefa, bits: 8}}",
            "prune={method: fpgm, ratio: 0.5, exclude: [first]}", "remove_pruned=true", f"run_dir={run}", "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| full precision |" in out and "| this run |" in out and "test top-1" in out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["removed"]["layer1.0.conv1"] == [16, 8]
    assert summary["cost"]["macs"] < summary["fp_cost"]["macs"]


def test_resume_flag(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", *TINY, f"run_dir={run}", "--no-progress", "--json"]) == 0
    capsys.readouterr()
    assert main(["train", *TINY[:-3], "train.epochs=2", "train.batch_size=16", "train.schedule=none",
                 f"run_dir={run}", "--resume", "--no-progress", "--json"]) == 0
    assert "resumed from" in capsys.readouterr().err
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_cli_errors(tmp_path, capsys):
    with pytest.raises(SystemExit, match="neither 'quant' nor 'prune'"):
        main(["compress", *TINY, f"run_dir={tmp_path}"])
    assert main(["eval", "--weights", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "notakeyvalue"])


JPEG = os.path.join(SHARED, "data", "cifar10-jpeg.tar.gz")
R20 = sorted(glob.glob(os.path.join(SHARED, "weights", "resnet20-*.th")))
needs_shared = pytest.mark.skipif(not (os.path.exists(JPEG) and R20), reason="../shared data or weights absent")


@needs_shared
def test_pretrained_resnet20_on_the_jpeg_test_set(capsys):
    # ../shared/README.md: ResNet-20 scores 81.0 % on the JPEG test set without fine-tuning.
    assert main(["eval", "--model", "resnet20", "--weights", R20[0], "--data", f"imagefolder:{JPEG}",
                 "--split", "test", "--json", "--no-progress"]) == 0
    res = _json(capsys)
    assert res["n"] == 10000 and res["top1"] == pytest.approx(0.810, abs=0.005)
    assert res["params"] == 269_722 and res["macs"] == 40_551_040 and res["top5"] > res["top1"]


@needs_shared
def test_short_compress_run_on_the_jpeg_set(tmp_path, capsys):
    cfg = os.path.join(ROOT, "configs", "compress_resnet20_dorefa8_fpgm50.yaml")
    assert main(["compress", cfg, f"weights={R20[0]}", f"data.spec=imagefolder:{JPEG}",
                 "data.limit={train: 1000, val: 200, test: 1000}", f"run_dir={tmp_path}"]) == 0
    captured = capsys.readouterr()
    assert "epoch 1/1" in captured.err  # progress
    assert "| this run |" in captured.out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["test"]["top1"] > 0.2  # 2x chance: pretrained start (81 %), 16 steps at 50 % filters (~28 %)
    assert (tmp_path / "best.pt").exists() and (tmp_path / "last.pt").exists()


def test_same_seed_same_run(tmp_path, capsys):
    """The seed covers the initial weights too (the model is built after seeding): two identical runs end with
    identical weights."""
    import torch

    finals = []
    for name in ("a", "b"):
        assert main(["train", *TINY, f"run_dir={tmp_path / name}", "--no-progress", "--json"]) == 0
        finals.append(torch.load(tmp_path / name / "final.pt", weights_only=True)["model"])
    capsys.readouterr()
    assert finals[0].keys() == finals[1].keys()
    assert all(torch.equal(finals[0][k], finals[1][k]) for k in finals[0])
