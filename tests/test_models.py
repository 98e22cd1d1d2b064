"""Model zoo: shapes, parameter counts, pretrained checkpoints."""

import glob
import os

import pytest
import torch

from cmn_ext.models import MODELS, build_model, load_pretrained, read_state_dict

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")
WEIGHTS = sorted(glob.glob(os.path.join(SHARED, "weights", "resnet*.th")))

CIFAR_PARAMS = {"resnet20": 0.27e6, "resnet32": 0.46e6, "resnet44": 0.66e6, "resnet56": 0.85e6, "resnet110": 1.7e6}


@pytest.mark.parametrize("name", list(MODELS))
def test_forward_shapes(name):
    kw = {"stem": "cifar"} if name in ("resnet18", "resnet50", "mobilenetv2") else {}
    if name == "mobilenetv2":
        kw["width_mult"] = 0.25
    model = build_model(name, num_classes=7, **kw).eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


@pytest.mark.parametrize("name,params", list(CIFAR_PARAMS.items()))
def test_cifar_resnet_sizes(name, params):
    n = sum(p.numel() for p in build_model(name).parameters())
    assert n == pytest.approx(params, rel=0.03)


def test_imagenet_stems():
    assert build_model("resnet18", 1000).eval()(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
    assert sum(p.numel() for p in build_model("resnet18", 1000).parameters()) == 11_689_512  # torchvision's count
    assert sum(p.numel() for p in build_model("resnet50", 1000).parameters()) == 25_557_032
    assert sum(p.numel() for p in build_model("mobilenetv2", 1000).parameters()) == 3_504_872


def test_unknown_model():
    with pytest.raises(ValueError, match="unknown model 'resnet21'"):
        build_model("resnet21")


def test_load_pretrained_strips_module_prefix(tmp_path):
    src = build_model("resnet20")
    path = tmp_path / "w.th"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}, "best_prec1": 1.0}, path)
    dst = load_pretrained(build_model("resnet20"), str(path))
    assert torch.equal(dst.linear.weight, src.linear.weight)
    with pytest.raises(ValueError, match="does not fit the model"):
        load_pretrained(build_model("resnet32"), str(path))


@pytest.mark.skipif(not WEIGHTS, reason="../shared/weights is absent")
@pytest.mark.parametrize("path", WEIGHTS, ids=os.path.basename)
def test_shared_checkpoints_load(path):
    depth = int(os.path.basename(path)[len("resnet"):].split("-")[0])
    model = load_pretrained(build_model(f"resnet{depth}"), path)
    saved, expected = set(read_state_dict(path)), set(model.state_dict())
    assert saved <= expected
    assert all(k.endswith("num_batches_tracked") for k in expected - saved)
