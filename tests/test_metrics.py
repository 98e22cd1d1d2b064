"""Metrics against hand counts."""

import pytest
import torch
from torch import nn

from cmn_ext.metrics import compression_table, model_cost
from cmn_ext.models import build_model
from cmn_ext.nn import quantize_model
from cmn_ext.prune import Pruner

APOT_SPQ = {"weight": {"kind": "apot", "bits": 4}, "act": {"kind": "apot", "bits": 4}, "first": "8bit", "last": "8bit"}


def _resnet20_macs_by_hand():
    conv1 = 32 * 32 * 16 * 3 * 9
    stage1 = 6 * (32 * 32 * 16 * 16 * 9)
    stage2 = 16 * 16 * 32 * 16 * 9 + 5 * (16 * 16 * 32 * 32 * 9)
    stage3 = 8 * 8 * 64 * 32 * 9 + 5 * (8 * 8 * 64 * 64 * 9)
    return conv1 + stage1 + stage2 + stage3 + 64 * 10


def test_resnet20_hand_counts():
    c = model_cost(build_model("resnet20"))
    assert c.macs == _resnet20_macs_by_hand() == 40_551_040  # "about 40.6 M"
    assert c.params == 269_722  # 0.27 M
    assert c.bops == c.macs * 32 * 32
    assert c.size_bits == c.params * 32
    assert c.avg_w_bits == 32.0


def test_tiny_model_counts_conv_linear_and_bits():
    model = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    quantize_model(model, {"weight": {"kind": "dorefa", "bits": 4}, "act": {"kind": "dorefa", "bits": 2}})
    c = model_cost(model, (2, 8, 8))
    conv, lin = c.layers
    assert (conv.macs, conv.params, conv.w_bits, conv.a_bits) == (4 * 4 * 4 * 2 * 9, 72, 4, 2)
    assert (lin.macs, lin.params) == (64 * 3, 192)
    assert c.bops == conv.macs * 4 * 2 + lin.macs * 4 * 2
    assert c.other_params == 4 + 4 + 3  # BN weight, BN bias, linear bias
    assert c.size_bits == (72 + 192) * 4 + 11 * 32


def test_pruning_is_counted():
    model = quantize_model(build_model("resnet20"), None)
    Pruner(model, "magnitude", 0.5, exclude=[]).prune_to(0.5)
    c = model_cost(model)
    assert c.macs == 40_551_040
    assert c.eff_macs == pytest.approx(c.macs / 2, rel=1e-3)
    assert c.nonzero_params < c.params


def test_apot_bops_match_spq_ppq_table():
    # SPQ/PPQ Table II: APoT (4/4) on ResNet-20 reduces BOPs x61.98 (first/last layers 8-bit).
    fp = model_cost(build_model("resnet20"))
    q = model_cost(quantize_model(build_model("resnet20"), APOT_SPQ))
    assert fp.bops / q.bops == pytest.approx(61.98, abs=0.05)
    table = compression_table({"fp": fp, "apot": q})
    assert "x61.97" in table and table.count("\n") == 3


def test_model_cost_restores_training_mode():
    model = build_model("resnet20").train()
    model_cost(model)
    assert model.training
    x = torch.zeros(1)
    del x
