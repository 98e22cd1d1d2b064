"""CMN cascade: thresholds from recall, batch compaction, Algorithm 1, deploy equality, cmn cascade."""

import json
import math

import pytest
import torch
from torch import nn

from cmn_ext.cascade import (Algorithm1, Cascade, candidate_set, cascade_accuracy, exit_rate, paper_G,
                             percent_grid, real_G, threshold_for_recall)
from cmn_ext.cli import main
from cmn_ext.data import build_datasets
from cmn_ext.metrics import model_cost
from cmn_ext.models import build_model
from cmn_ext.nn import convert, quantize_model

pytestmark = pytest.mark.slow  # pipeline runs; `pytest -m "not slow"` is the kernel suite


@pytest.mark.parametrize("n", [1, 7, 100, 1001])
def test_threshold_from_recall_hits_tau_within_one_sample(n):
    conf = torch.rand(n)
    for tau in [0.0, 0.05, 0.1, 0.33, 0.5, 0.77, 0.95, 1.0]:
        t = threshold_for_recall(conf, tau)
        assert abs(exit_rate(conf, t) - tau) <= 1.0 / n + 1e-12, (tau, t)
    assert threshold_for_recall(conf, 0.0) == math.inf


def test_threshold_with_ties_and_bad_input():
    conf = torch.tensor([0.9, 0.9, 0.9, 0.5, 0.2])
    t = threshold_for_recall(conf, 0.4)  # 2 of 5 wanted; the three tied 0.9 exit together or none
    assert exit_rate(conf, t) in (0.6,)
    assert exit_rate(conf, threshold_for_recall(conf, 0.8)) == 0.8
    with pytest.raises(ValueError, match="'tau' expected in"):
        threshold_for_recall(conf, 1.5)
    with pytest.raises(ValueError, match="empty"):
        threshold_for_recall(torch.tensor([]), 0.5)


class Scaled(nn.Module):
    """A fixed linear classifier with a temperature: different confidence per stage."""

    def __init__(self, seed, temp):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(4, 6, generator=g), requires_grad=False)
        self.temp = temp
        self.calls = []

    def forward(self, x):
        self.calls.append(len(x))
        return x @ self.w.T * self.temp


def test_cascade_compaction_matches_running_every_stage():
    stages = [Scaled(0, 0.5), Scaled(1, 1.0), Scaled(2, 3.0)]
    thresholds = [0.5, 0.6]
    x = torch.randn(200, 6)
    out = Cascade(stages, thresholds).run(x)
    full = [s(x) for s in stages]
    probs = [torch.softmax(f, 1).amax(1) for f in full]
    expected_stage = torch.full((200,), 2)
    expected_stage[probs[1] >= 0.6] = 1
    expected_stage[probs[0] >= 0.5] = 0
    assert torch.equal(out.exit_stage, expected_stage)
    expected = torch.stack(full)[expected_stage, torch.arange(200)]
    # same rows, smaller batches: BLAS may block a sub-batch differently, hence a float tolerance
    assert torch.allclose(out.logits, expected, rtol=1e-6, atol=1e-6)
    # stage 2 saw only the rows stage 1 kept, stage 3 only those stage 2 kept
    assert stages[1].calls[0] == int((expected_stage >= 1).sum())
    assert stages[2].calls[0] == int((expected_stage == 2).sum())


def test_cascade_edge_cases():
    stages = [Scaled(0, 1.0), Scaled(1, 1.0)]
    c = Cascade(stages, [0.0])  # every row exits at stage 1: stage 2 never runs
    out = c.run(torch.randn(5, 6))
    assert out.exit_stage.tolist() == [0] * 5 and stages[1].calls == []
    empty = Cascade([Scaled(0, 1.0), Scaled(1, 1.0)], [0.5]).run(torch.randn(0, 6))
    assert empty.logits.shape == (0, 4)
    with pytest.raises(ValueError, match="need 1 thresholds"):
        Cascade(stages, [0.5, 0.6])


def test_cascade_accuracy_from_stage_outputs():
    conf = torch.tensor([0.9, 0.2, 0.8, 0.4])
    lo_pred, hi_pred, labels = torch.tensor([1, 1, 0, 0]), torch.tensor([0, 0, 0, 1]), torch.tensor([1, 0, 1, 1])
    acc, ex = cascade_accuracy(conf, lo_pred, hi_pred, labels, 0.5)
    assert (acc, ex) == (0.75, 0.5)


def test_costs_and_grids():
    fp = model_cost(build_model("resnet8"), (3, 16, 16))
    assert paper_G(0.0, fp, fp) == paper_G(1.0, fp, fp) and real_G(0.5, fp, fp) == pytest.approx(1.5 * paper_G(1, fp, fp))
    assert percent_grid([5, 95, 5]) == list(range(5, 100, 5)) and percent_grid([10, 30]) == [10, 30]
    assert candidate_set(10, 2) == [5, 10, 15, 20] and candidate_set(95, 1) == [90, 95]


SPEC_LO = {"weight": {"kind": "binary"}, "act": {"kind": "binary", "encoding": "01"}, "first": "fp", "last": "fp"}
SPEC_HI = {"weight": {"kind": "linear", "bits": 8}, "act": {"kind": "linear", "bits": 8}, "first": "fp", "last": "fp"}


FINETUNE = {"epochs": 1, "batch_size": 32, "lr": 0.001, "schedule": "none"}


def _tiny_stages():
    data = build_datasets("digits", image_size=16, val_fraction=0.2, limit={"train": 96, "val": 64, "test": 64})
    torch.manual_seed(0)
    fp = build_model("resnet8")
    lo = quantize_model(build_model("resnet8"), SPEC_LO)
    hi = quantize_model(build_model("resnet8"), SPEC_HI)
    lo.load_state_dict(fp.state_dict(), strict=False)
    hi.load_state_dict(fp.state_dict(), strict=False)
    with torch.no_grad():
        for m in (lo, hi):
            m.train()
            m(torch.stack([data.train[i][0] for i in range(32)]))
    return data, fp.eval(), lo.eval(), hi.eval()


def test_algorithm1_finds_the_minimum_g_over_its_grid(tmp_path):
    data, fp, lo, hi = _tiny_stages()
    fp_cost = model_cost(fp, data.input_size)
    search = Algorithm1(lo, hi, data, eta=0.0, run_dir=str(tmp_path), recall=[20, 80, 20], prune=[20, 60, 20],
                        span=1, tolerance=0.0, method="magnitude", fp_cost=fp_cost, progress=False,
                        finetune=FINETUNE)
    res = search.run()
    assert res["tau0"] == 80  # eta = 0: nothing falls below it, so tau0 is the last of D
    assert res["S"] == [75, 80, 85]
    rows = res["rows"]
    assert [(r["tau"], r["phi"]) for r in rows] == [(t, p) for t in (75, 80, 85) for p in (20, 40, 60)]
    ok = [r for r in rows if r["ok"]]
    assert res["best"]["G"] == min(r["G"] for r in ok)
    assert (res["best"]["tau"], res["best"]["phi"]) == (85, 60)  # most exits, most pruning: smallest G
    # resumable: a second run reads every point back instead of fine-tuning again, even after a kill tore the
    # last record
    with open(tmp_path / "search.jsonl", "a") as f:
        f.write('{"tau": 85, "phi"')
    again = Algorithm1(lo, hi, data, eta=0.0, run_dir=str(tmp_path), recall=[20, 80, 20], prune=[20, 60, 20],
                       span=1, method="magnitude", fp_cost=fp_cost, progress=False, finetune=FINETUNE)
    again._finetune = lambda *a: pytest.fail("a finished point was fine-tuned again")
    with pytest.warns(UserWarning, match="torn last line"):
        assert again.run()["best"] == res["best"]


def test_algorithm1_rerun_with_changed_settings_is_not_stale(tmp_path):
    """A changed tolerance re-decides every stored point from its accuracy (no fine-tuning); a changed fine-tune
    measures anew instead of reusing points it did not decide."""
    data, fp, lo, hi = _tiny_stages()
    kw = dict(recall=[20, 80, 20], prune=[20, 60, 20], span=1, method="magnitude",
              fp_cost=model_cost(fp, data.input_size), progress=False)
    first = Algorithm1(lo, hi, data, eta=1.01, run_dir=str(tmp_path), finetune=FINETUNE, **kw).run()
    assert not any(r["ok"] for r in first["rows"])
    # The same floor reached through a tolerance now accepts every point: all are read back and re-decided.
    looser = Algorithm1(lo, hi, data, eta=1.01, tolerance=1.01, run_dir=str(tmp_path), finetune=FINETUNE, **kw)
    tuned = []
    real = looser._finetune
    looser._finetune = lambda hi_, phi: (tuned.append(phi), real(hi_, phi))
    res = looser.run()
    assert all(r["ok"] for r in res["rows"]) and len(res["rows"]) == 9
    assert tuned == [0.4, 0.6]  # only the points the first run never reached (it stopped at phi 20 each time)
    # Another fine-tune recipe: nothing stored is reused.
    other = Algorithm1(lo, hi, data, eta=1.01, tolerance=1.01, run_dir=str(tmp_path),
                       finetune=dict(FINETUNE, lr=0.002), **kw)
    tuned.clear()
    real = other._finetune
    other._finetune = lambda hi_, phi: (tuned.append(phi), real(hi_, phi))
    other.run()
    assert tuned == [0.2, 0.4, 0.6]


def test_algorithm1_breaks_at_eta_and_falls_back(tmp_path):
    data, fp, lo, hi = _tiny_stages()
    search = Algorithm1(lo, hi, data, eta=1.01, run_dir=str(tmp_path), recall=[20, 80, 20], prune=[20, 60, 20],
                        span=1, fp_cost=model_cost(fp, data.input_size), progress=False,
                        finetune={"epochs": 1, "batch_size": 32, "lr": 0.001, "schedule": "none"})
    res = search.run()
    assert res["tau0"] == 20 and res["S"] == [15, 20, 25]
    assert [r["phi"] for r in res["rows"]] == [20, 20, 20]  # each tau stops at its first point
    assert res["best"]["fallback"] and res["threshold"] == math.inf


def test_deploy_cascade_equals_qat_cascade():
    data, fp, lo, hi = _tiny_stages()
    x = torch.stack([data.test[i][0] for i in range(64)])
    with torch.no_grad():
        t = float(torch.softmax(lo(x), 1).amax(1).median())
    qat = Cascade([lo, hi], [t]).run(x)
    lo_d, rep_lo = convert(lo)
    hi_d, rep_hi = convert(hi)
    assert {r["kernel"] for r in rep_lo} == {None, "binary"} and {r["kernel"] for r in rep_hi} == {None, "int8"}
    dep = Cascade([lo_d, hi_d], [t]).run(x)
    assert torch.equal(dep.exit_stage, qat.exit_stage)
    assert torch.equal(dep.logits.argmax(1), qat.logits.argmax(1))


def test_cmn_cascade_json(tmp_path, capsys):
    args = ["cascade", f"run_dir={tmp_path}", "data.limit={train: 128, val: 64, test: 64}", "train.epochs=1",
            "cascade.fp.train.epochs=1", "cascade.lo.train.epochs=1", "cascade.hi.train.epochs=1",
            "cascade.search.recall=[50, 90, 20]", "cascade.search.prune=[30, 60, 30]", "cascade.search.span=0",
            "--json", "--no-progress"]
    assert main(args) == 0
    res = json.loads(capsys.readouterr().out)
    for key in ("fp_acc", "lo_acc", "hi_acc", "cascade_acc", "tau", "threshold", "exit_rate", "prune_ratio",
                "avg_bits", "bops", "G"):
        assert key in res, key
    for key in ("fp_acc", "lo_acc", "hi_acc", "cascade_acc", "exit_rate", "tau", "prune_ratio"):
        assert 0.0 <= res[key] <= 1.0, key
    assert (tmp_path / "report.md").exists() and (tmp_path / "accuracy_vs_bits.png").exists()
    assert res["cascades"][0]["deploy"]["agree_with_qat"] == 1.0
    # the default floor: the lower of the full-precision and 8-bit nets' validation top-1; fp trained here
    assert res["eta_source"] == "min" and res["val_eta"] == min(res["val_fp_acc"], res["val_hi_acc"])
    assert res["val_floor"] == res["val_eta"] and res["fp_source"] == "trained 1 epoch"
