"""The typed front door (cmn_ext.api) and the typed op wrappers (cmn_ext.ops.wrappers)."""

import dataclasses

import pytest
import torch

import cmn_ext
from cmn_ext.models import build_model
from cmn_ext.nn import QConv2d
from cmn_ext.nn.engine import DeployEngine
from cmn_ext.quant import LinearQuantizer
from helpers import int8_inputs


@pytest.mark.parametrize("make, field, value", [
    (cmn_ext.Int8, "bits", 9),
    (cmn_ext.Int8, "first", "fp16"),
    (cmn_ext.Binary, "encoding", "pm"),
    (cmn_ext.DoReFa, "bits", 0),
    (cmn_ext.APoT, "bits", 5),
    (cmn_ext.APoT, "act_alpha", -1.0),
    (cmn_ext.Prune, "method", "l1"),
    (cmn_ext.Prune, "ratio", 1.0),
    (cmn_ext.Prune, "schedule", "cosine"),
    (cmn_ext.Prune, "stages", 0),
    (cmn_ext.Prune, "exclude", "first"),
])
def test_config_rejects_bad_field_naming_it(make, field, value):
    with pytest.raises(ValueError, match=rf"{make.__name__}: '{field}' expected .*got {value!r}"):
        make(**{field: value})


def test_configs_are_frozen_and_give_specs():
    cfg = cmn_ext.APoT(first="same")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.bits = 3
    assert cfg.spec() == {"weight": {"kind": "apot", "bits": 4, "alpha": 3.0},
                          "act": {"kind": "apot", "bits": 4, "alpha": 8.0}, "first": "same", "last": "8bit"}
    assert cmn_ext.Binary().spec()["act"] == {"kind": "binary", "encoding": "01"}
    assert cmn_ext.Binary().first == "fp" and cmn_ext.Int8().first == "8bit"
    assert cmn_ext.Prune(exclude=["first"]).exclude == ("first",)


def test_quantize_rejects_wrong_types():
    with pytest.raises(TypeError, match="'config' expected Binary, Int8, DoReFa, APoT or None, got dict"):
        cmn_ext.quantize_(build_model("resnet8"), {"weight": {"kind": "binary"}})
    with pytest.raises(TypeError, match="'prune' expected a Prune config or None, got float"):
        cmn_ext.quantize_(build_model("resnet8"), cmn_ext.Int8(), prune=0.5)


def test_calibrate_rejects_empty_batches():
    with pytest.raises(ValueError, match="'batches' gave no batch"):
        cmn_ext.calibrate(cmn_ext.quantize_(build_model("resnet8"), cmn_ext.Int8()), [])


def test_quantize_prune_calibrate_convert_flow():
    torch.manual_seed(0)
    model = build_model("resnet8")
    assert cmn_ext.quantize_(model, cmn_ext.Int8(), prune=cmn_ext.Prune("fpgm", 0.5)) is model
    convs = [m for m in model.modules() if isinstance(m, QConv2d)]
    assert convs and model.cmn_pruner.current == pytest.approx(0.5)
    # One-shot pruning zeroes half the filters of every inner layer (the first one is excluded).
    inner = [m for m in convs[1:] if m.weight_mask is not None]
    assert inner and all(int(m.weight_mask.flatten(1).any(1).sum()) == m.out_channels // 2 for m in inner)

    model.train()
    batches = [(torch.rand(4, 3, 16, 16), torch.zeros(4, dtype=torch.long)) for _ in range(3)]
    cmn_ext.calibrate(model, batches, limit=2)
    assert model.training  # the mode is restored
    clips = [m.clip_value for m in model.modules() if isinstance(m, LinearQuantizer) and m.clip == "kl"]
    assert clips and all(float(c) > 0 for c in clips)

    engine, report = cmn_ext.convert(model)
    assert isinstance(engine, DeployEngine)
    assert {r["kernel"] for r in report} == {"int8"}
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        ref = model.eval()(x)
    out = engine(x)
    assert out.shape == ref.shape
    assert (out.argmax(1) == ref.argmax(1)).all()


def test_quantize_none_only_adds_masks_for_pruning():
    model = cmn_ext.quantize_(build_model("resnet8"), None, prune=cmn_ext.Prune("magnitude", 0.25))
    q = [m for m in model.modules() if isinstance(m, QConv2d)]
    assert q and all(m.w_quant is None for m in q)


def test_wrappers_accept_int_or_pair_geometry():
    x, w = int8_inputs(1, 5, 3, 7, 6, 3, 3, unsigned=True)
    a = cmn_ext.ops.int8_conv2d(x, w, stride=2, padding=1)
    b = torch.ops.cmn.int8_conv2d(x, w, [2, 2], [1, 1], [1, 1], None)
    assert torch.equal(a, b)
    ref = torch.nn.functional.conv2d(x.double(), w.double(), stride=(1, 2), padding=(0, 1)).round().int()
    assert torch.equal(cmn_ext.ops.int8_conv2d(x, w, stride=(1, 2), padding=(0, 1)), ref)

    xb, wb = cmn_ext.ops.pack_bits(torch.randn(1, 5, 7, 6)), cmn_ext.ops.pack_bits(torch.randn(3, 5, 3, 3))
    assert torch.equal(cmn_ext.ops.binary_conv2d(xb, wb, 5, padding=1),
                       torch.ops.cmn.binary_conv2d(xb, wb, 5, [1, 1], [1, 1], [1, 1], "pm1"))
    with pytest.raises(TypeError, match=r"'stride' expected an int or a pair of ints, got \(1, 2, 3\)"):
        cmn_ext.ops.int8_conv2d(x, w, stride=(1, 2, 3))


def test_op_names_come_from_the_registry():
    assert set(cmn_ext.OP_NAMES) >= {"pack_bits", "binary_conv2d", "int8_conv2d", "pack_int4", "apot_matmul",
                                     "apot_conv2d", "int8_prepack", "binary_prepack"}
    assert all(hasattr(torch.ops.cmn, name) for name in cmn_ext.OP_NAMES)
    assert all(hasattr(cmn_ext.ops, name) for name in cmn_ext.OP_NAMES)  # every op has a typed wrapper
