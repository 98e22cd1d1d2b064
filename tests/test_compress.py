"""SPQ / PPQ: schedules inside real training, and the pipelines end to end on a tiny run."""

import json

import pytest
import torch

from cmn_ext.cli import main
from cmn_ext.data import build_datasets
from cmn_ext.models import build_model
from cmn_ext.nn import quantize_model
from cmn_ext.prune import Pruner
from cmn_ext.train import Trainer

pytestmark = pytest.mark.slow  # pipeline runs; `pytest -m "not slow"` is the kernel suite

APOT = {"weight": {"kind": "apot", "bits": 4}, "act": {"kind": "apot", "bits": 4}, "first": "8bit", "last": "8bit"}
CFG = {"batch_size": 32, "optimizer": "sgd", "lr": 0.05, "weight_decay": 5e-4, "schedule": "plateau", "seed": 0}


def _data():
    return build_datasets("digits", image_size=16, val_fraction=0.2, limit={"train": 96, "val": 32, "test": 32})


class Recorder:
    """Wraps a pruner to snapshot masks and weights at every epoch end."""

    def __init__(self, pruner, layer):
        self.pruner, self.layer, self.masks, self.grads = pruner, layer, [], []

    def __getattr__(self, name):
        return getattr(self.pruner, name)

    def after_step(self):
        self.grads.append(self.layer.weight.grad.detach().clone())
        self.pruner.after_step()

    def on_epoch_end(self, epoch):
        self.pruner.on_epoch_end(epoch)
        self.masks.append(self.layer.filter_keep().clone())


def test_spq_reselects_masks_each_epoch_and_pruned_weights_get_gradients():
    model = quantize_model(build_model("resnet8"), APOT)
    layer = model.layer2[0].conv1
    rec = Recorder(Pruner(model, "fpgm", 0.5, schedule="soft", exclude=[]), layer)
    Trainer(model, _data(), dict(CFG, epochs=4, lr=0.5), None, pruner=rec, progress=False).fit()
    assert all(int((~m).sum()) == 16 for m in rec.masks)  # 50 % of 32 filters, every epoch end
    assert any(not torch.equal(a, b) for a, b in zip(rec.masks, rec.masks[1:]))  # re-selected, not frozen
    pruned_during_epoch2 = ~rec.masks[0]
    grads = rec.grads[len(rec.grads) // 4:]  # steps after the first selection
    assert any(g[pruned_during_epoch2].abs().sum() > 0 for g in grads)


def test_spq_final_model_compacts_to_the_same_function():
    from cmn_ext.prune import remove_pruned_filters

    model = quantize_model(build_model("resnet8"), APOT)
    pruner = Pruner(model, "fpgm", 0.5, schedule="soft", exclude=[])
    out = Trainer(model, _data(), dict(CFG, epochs=2, bn_recalibrate=2), None, pruner=pruner, progress=False).fit()
    assert "final_top1" in out  # BN statistics re-estimated after the last zeroing, then evaluated
    conv, bn = model.layer2[0].conv1, model.layer2[0].bn1
    pruned = ~conv.filter_keep()
    assert int(pruned.sum()) == 16
    assert torch.all(bn.weight[pruned] == 0) and torch.all(bn.bias[pruned] == 0)
    assert torch.all(bn.running_var[pruned] == 0)  # recalibrated: a zero filter has zero batch variance
    model.eval()
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        masked = model(x)
        assert remove_pruned_filters(model)["layer2.0.conv1"] == (32, 16)
        torch.testing.assert_close(model(x), masked, rtol=0, atol=1e-5)


def test_ppq_masks_only_grow_and_pruned_weights_stay_zero():
    model = quantize_model(build_model("resnet8"), None)
    layer = model.layer3[0].conv1
    pruner = Pruner(model, "fpgm", 0.6, schedule="progressive", stages=3, epochs=6, exclude=[])
    rec = Recorder(pruner, layer)
    Trainer(model, _data(), dict(CFG, epochs=6), None, pruner=rec, progress=False).fit()
    pruned = [~m for m in rec.masks]
    assert [int(p.sum()) for p in pruned] == [12, 12, 25, 25, 38, 38]  # int(64 * 0.2 k)
    for before, after in zip(pruned, pruned[1:]):
        assert torch.all(after[before])  # once pruned, always pruned
    assert torch.all(layer.weight[pruned[-1]] == 0)
    bn = model.layer3[0].bn1
    assert torch.all(bn.weight[pruned[-1]] == 0) and torch.all(bn.bias[pruned[-1]] == 0)


TINY = ["model.name=resnet8", "data={spec: digits, image_size: 16, val_fraction: 0.2, limit: {train: 128, val: 32, test: 64}}",
        "compress.baseline.epochs=1", "train.batch_size=32"]


@pytest.mark.parametrize("method", ["spq", "ppq"])
def test_pipeline_end_to_end(tmp_path, capsys, method):
    extra = ["compress.spq.epochs=2"] if method == "spq" else ["compress.ppq.prune_epochs=2", "compress.ppq.qat.epochs=1"]
    results = tmp_path / "results"
    assert main(["compress", "--method", method, *TINY, *extra, f"run_dir={tmp_path / 'run'}",
                 f"compress.results_dir={results}", "--json", "--no-progress"]) == 0
    res = json.loads(capsys.readouterr().out)
    for key in ("method", "model", "dataset", "baseline_acc", "compressed_acc", "size_reduction",
                "bops_reduction", "epochs", "device"):
        assert key in res, key
    assert res["method"] == method and 0 <= res["compressed_acc"] <= 1
    assert res["size_reduction"] > 8 and res["bops_reduction"] > 64  # 4-bit plus 30 % of the filters
    assert res["removed_filters"]["layer1.0.conv1"] == [16, 12]  # 16 - int(16 * 0.3)
    assert res["deploy"]["kernels"] == {"int8": 2, "apot": 6}
    assert res["deploy"]["check"]["argmax_agree"] == 1.0
    # compaction keeps the function (up to float summation order at a quantizer's rounding boundary)
    assert abs(res["masked_acc"] - res["compressed_acc"]) <= 1 / 64 + 1e-9
    saved = json.loads((results / f"spq_ppq_resnet8_{method}.json").read_text())
    assert saved["compressed_acc"] == res["compressed_acc"]
    assert (tmp_path / "run" / "deploy.pt").exists() and (tmp_path / "run" / "result.md").exists()


def test_pipeline_needs_a_start(tmp_path):
    assert main(["compress", "--method", "spq", "model.name=resnet8", f"run_dir={tmp_path}", "--no-progress"]) == 2
