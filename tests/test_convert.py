"""Conversion of QAT models to deploy models on torch.ops.cmn kernels: equal predictions, save / load.

Tolerance: the deploy model computes the exact integer accumulator and one fp32 epilogue with the batch norm
folded in, the QAT model a float conv followed by a batch norm; the two differ by float rounding (~1e-6
relative). Where a multi-bit activation lands within that rounding of a quantization threshold, one code
can differ by one step, which moves logits by a small fraction. Stated bound: identical argmax on every
test input, and max |logit difference| <= 1e-4 (binary) / 5e-2 (multi-bit) of the largest |logit|.
"""

import pytest
import torch
from torch import nn

from cmn_ext.models import build_model
from cmn_ext.nn import (APoTConv2d, BinaryConv2d, Int8Conv2d, QConv2d, compare, convert, load_deploy,
                        quantize_model, save_deploy)
from cmn_ext.prune import Pruner


class Small(nn.Module):
    def __init__(self, classes=5):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 40, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(40)
        self.conv3 = nn.Conv2d(40, 33, 3, padding=2, dilation=2, bias=False)
        self.bn3 = nn.BatchNorm2d(33)
        self.fc1 = nn.Linear(33, 24, bias=False)
        self.bnf = nn.BatchNorm1d(24)
        self.fc2 = nn.Linear(24, classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        x = torch.relu(self.bn3(self.conv3(x)))
        x = torch.relu(self.bnf(self.fc1(x.mean((2, 3)))))
        return self.fc2(x)


SPECS = {
    "binary01": {"weight": {"kind": "binary"}, "act": {"kind": "binary", "encoding": "01"}, "first": "fp", "last": "fp"},
    "binarypm1": {"weight": {"kind": "binary"}, "act": {"kind": "binary", "encoding": "pm1"}, "first": "fp", "last": "fp"},
    "int8": {"weight": {"kind": "linear", "bits": 8}, "act": {"kind": "dorefa", "bits": 8}, "first": "8bit", "last": "8bit"},
    "dorefa4": {"weight": {"kind": "dorefa", "bits": 4}, "act": {"kind": "dorefa", "bits": 4}, "first": "fp", "last": "fp"},
    "apot": {"weight": {"kind": "apot", "bits": 4}, "act": {"kind": "apot", "bits": 4}, "first": "8bit", "last": "8bit"},
}
KERNEL = {"binary01": BinaryConv2d, "binarypm1": BinaryConv2d, "int8": Int8Conv2d, "dorefa4": Int8Conv2d,
          "apot": APoTConv2d}


def _settle(model, shape=(3, 16, 16), steps=4):
    """Give batch norms real statistics and randomise their affine parameters, as training would."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.4)
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(torch.randn(16, *shape))
    return model.eval()


def _check(qat, deploy, x, rel):
    res = compare(qat, deploy, [x])
    assert res["argmax_agree"] == 1.0, res
    assert res["max_rel_diff"] <= rel, res
    return res


@pytest.mark.parametrize("name", list(SPECS))
def test_small_model_conversion(name):
    qat = _settle(quantize_model(Small(), SPECS[name]))
    deploy, report = convert(qat)
    kinds = {r["layer"]: r["kernel"] for r in report}
    assert isinstance(deploy.net.conv2, KERNEL[name]) and isinstance(deploy.net.fc1, KERNEL[name])
    assert isinstance(deploy.net.bn2, nn.Identity) and isinstance(deploy.net.bnf, nn.Identity)  # folded
    if SPECS[name]["first"] == "fp":
        assert kinds["conv1"] is None and isinstance(deploy.net.conv1, QConv2d)
    _check(qat, deploy, torch.randn(32, 3, 16, 16), 1e-4 if name.startswith("binary") else 5e-2)
    assert isinstance(qat.conv2, QConv2d)  # the QAT model is untouched


def test_int8_pruned_resnet20_skips_pruned_filters():
    qat = quantize_model(build_model("resnet20"), SPECS["int8"])
    Pruner(qat, "fpgm", 0.5, exclude=["first"]).prune_to(0.5)
    Pruner(qat, "magnitude", 0.3, layers=["layer3.2.conv2"]).prune_to(0.3)  # an unstructured mask as well
    _settle(qat, (3, 32, 32), steps=2)
    deploy, report = convert(qat)
    assert all(r["kernel"] == "int8" for r in report)
    layer = deploy.net.layer2[1].conv1
    assert layer.meta["kept"] == 16 and layer.weight.shape[0] == 16 and int(layer.keep.sum()) == 16
    _check(qat, deploy, torch.randn(8, 3, 32, 32), 5e-2)


def test_apot_resnet20_and_binary_resnet20():
    for spec in ("apot", "binary01"):
        qat = _settle(quantize_model(build_model("resnet20"), SPECS[spec]), (3, 32, 32), steps=2)
        deploy, _ = convert(qat)
        _check(qat, deploy, torch.randn(8, 3, 32, 32), 1e-4 if spec == "binary01" else 5e-2)


@pytest.mark.parametrize("name", ["binary01", "int8", "apot"])
def test_save_and_load(tmp_path, name):
    qat = quantize_model(build_model("resnet20"), SPECS[name])
    if name == "int8":
        Pruner(qat, "fpgm", 0.5, exclude=["first"]).prune_to(0.5)
    _settle(qat, (3, 32, 32), steps=2)
    deploy, _ = convert(qat)
    path = tmp_path / "deploy.pt"
    save_deploy(deploy, str(path), {"model": "resnet20", "num_classes": 10, "quant": SPECS[name]})
    raw = torch.load(path, weights_only=True)  # plain data: loadable with weights_only
    assert raw["format"] == "cmn_ext.deploy/1"
    again = load_deploy(str(path))
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(again(x), deploy(x))


def test_physically_pruned_model_saves_and_loads(tmp_path):
    from cmn_ext.prune import remove_pruned_filters

    qat = quantize_model(build_model("resnet20"), SPECS["dorefa4"])
    Pruner(qat, "fpgm", 0.5, exclude=["first"]).prune_to(0.5)
    _settle(qat, (3, 32, 32), steps=2)
    remove_pruned_filters(qat)
    deploy, _ = convert(qat)
    assert deploy.net.layer1[0].conv1.meta["out_channels"] == 8
    path = tmp_path / "d.pt"
    save_deploy(deploy, str(path), {"model": "resnet20", "num_classes": 10, "quant": SPECS["dorefa4"]})
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(load_deploy(str(path))(x), deploy(x))


def test_unsupported_layers_stay_float_with_a_reason():
    spec = {"weight": {"kind": "dorefa", "bits": 8}, "act": {"kind": "dorefa", "bits": 8}}
    qat = _settle(quantize_model(Small(), spec))
    deploy, report = convert(qat)
    notes = {r["layer"]: r["note"] for r in report}
    assert "int8 cannot hold" in notes["conv2"] and isinstance(deploy.net.conv2, QConv2d)
    mb = quantize_model(build_model("mobilenetv2", stem="cifar", width_mult=0.25), SPECS["int8"])
    _settle(mb, (3, 32, 32), steps=1)
    _, report = convert(mb)
    assert any("grouped conv" in r["note"] for r in report)
    assert any(r["kernel"] == "int8" for r in report)


def test_binary_layer_with_unstructured_mask_is_not_converted():
    qat = quantize_model(Small(), SPECS["binary01"])
    Pruner(qat, "magnitude", 0.3, layers=["conv2"]).prune_to(0.3)
    _settle(qat)
    _, report = convert(qat)
    assert "unstructured mask" in {r["layer"]: r["note"] for r in report}["conv2"]


def test_deploy_model_refuses_gradients_but_runs_under_no_grad():
    qat = _settle(quantize_model(Small(), SPECS["int8"]))
    deploy, _ = convert(qat)
    assert not any(p.requires_grad for p in deploy.parameters())
    out = deploy(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 5)
