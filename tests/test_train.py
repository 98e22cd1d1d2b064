"""Trainer: loss falls, schedules, atomic checkpoints, resume, DDP with two gloo processes."""

import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from cmn_ext.data import build_datasets
from cmn_ext.models import build_model
from cmn_ext.nn import quantize_model
from cmn_ext.prune import Pruner
from cmn_ext.train import PlateauDecay, Trainer, evaluate, load, save_atomic

pytestmark = pytest.mark.slow  # pipeline runs; `pytest -m "not slow"` is the kernel suite

CFG = {"epochs": 4, "batch_size": 32, "optimizer": "sgd", "lr": 0.05, "weight_decay": 0.0, "schedule": "none",
       "seed": 0}


def _data(n=96):
    return build_datasets("digits", val_fraction=0.25, limit={"train": n, "val": 32, "test": 32})


@pytest.mark.parametrize("quant", [None, {"weight": {"kind": "dorefa", "bits": 4}, "act": {"kind": "dorefa", "bits": 4}}])
def test_loss_falls(tmp_path, quant):
    model = build_model("resnet20")
    if quant:
        quantize_model(model, quant)
    cfg = dict(CFG, epochs=6, optimizer="adam", lr=2e-3)
    t = Trainer(model, _data(), cfg, str(tmp_path), progress=False)
    result = t.fit()
    losses = [row["train_loss"] for row in result["history"]]
    assert losses[-1] < losses[0] * 0.8
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert open(tmp_path / "metrics.csv").readline().startswith("epoch,lr,train_loss")
    assert os.path.exists(tmp_path / "best.pt") and os.path.exists(tmp_path / "last.pt")


def test_resume_continues_exactly(tmp_path):
    cfg = dict(CFG, epochs=2)
    torch.manual_seed(1)
    straight = Trainer(build_model("resnet20"), _data(64), cfg, str(tmp_path / "a"), progress=False)
    straight.fit()
    # the same run, "killed" after its first epoch and resumed
    torch.manual_seed(1)
    Trainer(build_model("resnet20"), _data(64), dict(cfg, epochs=1), str(tmp_path / "b"), progress=False).fit()
    resumed = Trainer(build_model("resnet20"), _data(64), cfg, str(tmp_path / "b"), progress=False, resume=True)
    assert resumed.start_epoch == 1
    resumed.fit()
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert len(resumed.history) == 2


def test_resume_restores_pruner_and_masks(tmp_path):
    def make():
        model = quantize_model(build_model("resnet20"), None)
        return model, Pruner(model, "magnitude", 0.5, schedule="progressive", stages=2, epochs=2)

    model, pruner = make()
    with pytest.warns(UserWarning, match="short of the target"):  # "killed" after stage 1 of 2
        Trainer(model, _data(32), dict(CFG, epochs=1), str(tmp_path), pruner=pruner, progress=False).fit()
    model2, pruner2 = make()
    t = Trainer(model2, _data(32), dict(CFG, epochs=2), str(tmp_path), pruner=pruner2, progress=False, resume=True)
    assert pruner2.current == pytest.approx(0.25)
    assert torch.equal(model2.layer1[0].conv1.weight_mask, model.layer1[0].conv1.weight_mask)
    t.fit()
    assert pruner2.current == pytest.approx(0.5)


def test_plateau_decay_rule():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = PlateauDecay(opt, factor=0.9, patience=3)
    lrs = []
    for acc in [0.5, 0.6, 0.6, 0.55, 0.59, 0.58, 0.7, 0.6, 0.6, 0.6]:
        sched.step(acc)
        lrs.append(round(opt.param_groups[0]["lr"], 6))
    # 0.6, 0.55, 0.59: three epochs without beating 0.6 -> x0.9; 0.58, then 0.7 resets; three 0.6 -> x0.9
    assert lrs == [0.1] * 4 + [0.09] * 5 + [0.081]


def test_atomic_save_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    path = str(tmp_path / "ckpt.pt")
    save_atomic({"v": torch.tensor(1)}, path)

    def broken(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        save_atomic({"v": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert int(load(path)["v"]) == 1
    assert [p for p in os.listdir(tmp_path) if p.startswith(".tmp")] == []


def test_evaluate_top1_top5():
    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            # class scores 0 > 1 > ... > 9 for every input
            return torch.arange(10, 0, -1, dtype=torch.float32).expand(len(x), 10) + self.p

    ds = torch.utils.data.TensorDataset(torch.zeros(10, 1), torch.arange(10))
    res = evaluate(Fixed(), ds, batch_size=3)
    assert res["n"] == 10 and res["top1"] == pytest.approx(0.1) and res["top5"] == pytest.approx(0.5)


def test_ddp_two_gloo_processes(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "cmn_ext.cli",
           "train", "model.name=resnet20", "data.limit={train: 64, val: 32, test: 48}", "train.epochs=2",
           "train.batch_size=16", "train.schedule=none", f"run_dir={tmp_path}", "--no-progress", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(open(tmp_path / "summary.json").read())
    assert summary["test"]["n"] == 48  # the two shards together cover the test split exactly once
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert len(rows) == 2  # written by rank 0 only
    assert "rank" not in proc.stdout and json.loads(proc.stdout)["test"]["n"] == 48


def test_recalibrate_bn_gives_the_exact_batch_statistics():
    from cmn_ext.train import recalibrate_bn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Dropout(0.5))
    batches = [torch.randn(8, 3, 6, 6) for _ in range(3)]
    net.eval()
    assert recalibrate_bn(net, [(b, None) for b in batches], batches=2) == 2
    assert not net.training and not net[1].training and net[1].momentum == 0.1  # modes and momentum restored
    feats = torch.cat([net[0](b) for b in batches[:2]]).detach()
    torch.testing.assert_close(net[1].running_mean, feats.mean((0, 2, 3)))
    # the cumulative average of per-batch unbiased variances (what BatchNorm accumulates)
    var = torch.stack([net[0](b).detach().var((0, 2, 3), unbiased=True) for b in batches[:2]]).mean(0)
    torch.testing.assert_close(net[1].running_var, var)
    with pytest.raises(ValueError, match="'batches' expected >= 1, got 0"):
        recalibrate_bn(net, batches, batches=0)
    with pytest.raises(ValueError, match="yielded no batches"):
        recalibrate_bn(net, [], batches=1)
