"""Pruning: FPGM / magnitude selection, schedules, masks in the state dict, physical removal."""

import pytest
import torch
from torch import nn

from cmn_ext.models import build_model
from cmn_ext.nn import quantize_model
from cmn_ext.prune import (Pruner, fpgm_scores, fpgm_select, global_magnitude_masks, magnitude_mask,
                           pruned_fraction, removable_chains, remove_pruned_filters)


def _hand_filters():
    # f0 = (0, 0), f1 = (1, 0), f2 = (0, 1), f3 = (10, 10). Sums of distances to the others:
    # f0: 1 + 1 + sqrt(200) = 16.14;  f1 = f2: 1 + sqrt(2) + sqrt(181) = 15.87;  f3: 41.05.
    return torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [10.0, 10.0]]).view(4, 2, 1, 1)


def test_fpgm_hand_example():
    w = _hand_filters()
    s = fpgm_scores(w)
    assert s.tolist() == pytest.approx([2 + 200**0.5, 1 + 2**0.5 + 181**0.5, 1 + 2**0.5 + 181**0.5,
                                        200**0.5 + 2 * 181**0.5])
    # FPGM prunes the two filters nearest the geometric median, not the smallest-norm filter f0.
    assert fpgm_select(w, 0.5).tolist() == [True, False, False, True]
    assert fpgm_select(w, 0.25).tolist() == [True, False, True, True]  # tie: the lower index goes first
    assert fpgm_select(w, 0.0).tolist() == [True] * 4


def test_fpgm_progressive_keeps_earlier_choices():
    w = _hand_filters()
    first = fpgm_select(w, 0.25)
    second = fpgm_select(w, 0.5, keep=first)
    assert not second[1] and int((~second).sum()) == 2
    # scores among the survivors {f0, f2, f3}: f0 = 1 + 14.14, f2 = 1 + 13.45 -> f2 goes
    assert second.tolist() == [True, False, False, True]


def test_magnitude_layer_and_global():
    w = torch.tensor([[3.0, -1.0], [0.5, -4.0]])
    assert magnitude_mask(w, 0.5).tolist() == [[1, 0], [0, 1]]
    a, b = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.1, 10.0])
    ma, mb = global_magnitude_masks([a, b], 0.4)
    assert ma.tolist() == [0, 1, 1] and mb.tolist() == [0, 1]
    with pytest.raises(ValueError, match="'ratio' expected in"):
        magnitude_mask(w, 1.0)


def _qat_resnet():
    return quantize_model(build_model("resnet20"), None)


def _sgd_step(model, pruner=None):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for _ in range(2):
        loss = model(torch.randn(4, 3, 32, 32)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if pruner is not None:
            pruner.after_step()


def test_oneshot_fpgm_is_hard_and_zeroes_bn():
    model = _qat_resnet()
    pruner = Pruner(model, "fpgm", 0.5, exclude=["first"])
    pruner.on_epoch_start(0)
    conv, bn = model.layer1[0].conv1, model.layer1[0].bn1
    keep = conv.filter_keep()
    assert int((~keep).sum()) == 8
    _sgd_step(model, pruner)
    assert torch.all(conv.weight[~keep] == 0)
    assert torch.all(bn.weight[~keep] == 0) and torch.all(bn.bias[~keep] == 0)
    assert model.conv1.filter_keep().all()  # excluded
    assert 0.45 < pruned_fraction(model) < 0.5


def test_soft_schedule_lets_pruned_weights_train_and_reselects():
    model = _qat_resnet()
    pruner = Pruner(model, "fpgm", 0.5, schedule="soft", exclude=["first"])
    pruner.on_epoch_start(0)
    assert pruned_fraction(model) == 0  # SPQ prunes at epoch ends
    pruner.on_epoch_end(0)
    conv = model.layer2[1].conv1
    pruned = ~conv.filter_keep()
    assert torch.all(conv.weight[pruned] == 0)
    x = torch.randn(2, conv.in_channels, 8, 8)
    conv(x).sum().backward()
    assert conv.weight.grad[pruned].abs().min() > 0  # the gradient reaches pruned filters (soft mask)
    assert torch.all(conv(x)[:, pruned] == 0)  # while the forward pass ignores them
    with torch.no_grad():
        conv.weight[pruned] = torch.randn_like(conv.weight[pruned]) * 10  # pruned filters grow back...
    pruner.on_epoch_end(1)
    assert not torch.equal(~conv.filter_keep(), pruned)  # ...and the next selection starts afresh
    assert int((~conv.filter_keep()).sum()) == int(pruned.sum())


def test_hard_mask_blocks_the_gradient():
    model = _qat_resnet()
    Pruner(model, "fpgm", 0.5).prune_to(0.5)
    conv = model.layer2[1].conv1
    conv(torch.randn(2, conv.in_channels, 8, 8)).sum().backward()
    assert torch.all(conv.weight.grad[~conv.filter_keep()] == 0)


def test_progressive_schedule_raises_ratio_in_stages():
    model = _qat_resnet()
    pruner = Pruner(model, "magnitude", 0.6, schedule="progressive", stages=3, epochs=6)
    seen = []
    for epoch in range(6):
        pruner.on_epoch_start(epoch)
        seen.append(round(pruner.current, 6))
    assert seen == [0.2, 0.2, 0.4, 0.4, 0.6, 0.6]
    conv = model.layer3[2].conv2
    assert float((conv.weight_mask == 0).float().mean()) == pytest.approx(0.6, abs=1e-3)
    _sgd_step(model, pruner)
    assert torch.all(conv.weight[conv.weight_mask == 0] == 0)


def test_masks_survive_state_dict_roundtrip():
    model = _qat_resnet()
    Pruner(model, "magnitude", 0.5, scope="global").prune_to(0.5)
    other = _qat_resnet()
    other.load_state_dict(model.state_dict())
    assert torch.equal(other.layer2[0].conv2.weight_mask, model.layer2[0].conv2.weight_mask)
    assert pruned_fraction(other) == pytest.approx(pruned_fraction(model))


def test_remove_pruned_filters_respects_residuals_and_keeps_the_function():
    model = _qat_resnet()
    Pruner(model, "fpgm", 0.5, exclude=["first"]).prune_to(0.5)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    before = model(x)
    chains = removable_chains(model)
    assert set(chains) == {f"layer{s}.{b}.conv1" for s in (1, 2, 3) for b in range(3)}  # never a block output
    report = remove_pruned_filters(model)
    assert report["layer2.1.conv1"] == (32, 16)
    assert model.layer2[1].conv1.weight.shape[0] == 16 and model.layer2[1].bn1.num_features == 16
    assert model.layer2[1].conv2.weight.shape == (32, 16, 3, 3)  # consumer: inputs shrink, outputs kept
    assert torch.allclose(model(x), before, atol=1e-5)


def test_pruner_errors():
    with pytest.raises(ValueError, match="no QConv2d/QLinear"):
        Pruner(build_model("resnet20"), "fpgm", 0.5)
    model = _qat_resnet()
    with pytest.raises(ValueError, match="'method' expected"):
        Pruner(model, "random", 0.5)
    with pytest.raises(ValueError, match="'schedule' expected"):
        Pruner(model, "fpgm", 0.5, schedule="gradual")
    with pytest.raises(ValueError, match="scope=\"global\""):
        Pruner(model, "fpgm", 0.5, scope="global")
    with pytest.raises(ValueError, match="not QConv2d/QLinear"):
        Pruner(model, "fpgm", 0.5, layers=["nope"])


def test_fpgm_skips_depthwise_convs():
    model = quantize_model(build_model("mobilenetv2", stem="cifar", width_mult=0.25), None)
    pruner = Pruner(model, "fpgm", 0.3)
    assert all(m.groups == 1 and isinstance(m, nn.Conv2d) for _, m in pruner.modules())


@pytest.mark.parametrize("kind", ["apot", "dorefa", "binary", "linear"])
def test_removal_keeps_quantized_weights_exact(kind):
    """Quantizers that scale by weight statistics are frozen at removal: the remaining quantized weights do
    not move by a single bit, and the outputs agree up to float summation order."""
    act = {"kind": "binary", "encoding": "01"} if kind == "binary" else {"kind": "dorefa", "bits": 8}
    bits = {} if kind == "binary" else {"bits": 4}
    model = quantize_model(build_model("resnet20"), {"weight": {"kind": kind, **bits}, "act": act})
    Pruner(model, "fpgm", 0.3, exclude=[]).prune_to(0.3)
    model.train()
    with torch.no_grad():
        model(torch.randn(16, 3, 32, 32))  # batch-norm statistics of this net
    model.eval()
    x = torch.randn(3, 3, 32, 32)
    before = model(x)
    producer, consumer = model.layer3[0].conv1, model.layer3[0].conv2
    keep = producer.filter_keep()
    wp, wc = producer.quantized_weight().detach()[keep], consumer.quantized_weight().detach()[:, keep]
    remove_pruned_filters(model)
    assert producer.weight.shape[0] == 45
    assert torch.equal(producer.quantized_weight().detach(), wp)
    assert torch.equal(consumer.quantized_weight().detach(), wc)
    after = model(x)
    assert torch.equal(after.argmax(1), before.argmax(1))
    assert (after - before).abs().max() <= 5e-2 * before.abs().max()
