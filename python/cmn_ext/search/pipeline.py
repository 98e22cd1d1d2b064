"""``cmn search``: APQ end to end, in resumable stages, each writing into the run directory and skipped when
its result exists:

  supernet   train the elastic MobileNetV2 with progressive shrinking          -> supernet.pt
  pairs      measure (arch, accuracy) pairs, full precision and quantized       -> pairs/*.jsonl
  predictor  FP predictor; quantized predictor by transfer and from scratch     -> predictor.pt, predictor.json
  cost       latency table of the deployed network's layers, measured           -> cost_table.json
  evolve     evolutionary search under the budget, scored by the predictor     -> evolve.json
  finalize   the chosen network and the uniform 8/4-bit largest sub-networks:
             quantize, fine-tune, evaluate, convert to the kernels, time        -> final.json, pareto.png
             (each with the latency table's prediction beside its measured latency)
The summary holds no machine paths: files are named relative to the run directory, a dataset root by its name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random

import torch

from .. import config as config_mod
from ..config import RunConfig, as_run_config
from .. import runner
from ..data import make_loader
from ..files import expect_keys, load, load_state_into, run_dir_lock, save_atomic, write_text_atomic
from ..train.loop import evaluate
from . import pairs as pairs_mod
from .cost import CostTable, bitfusion_cost, deployed_kernel, device_name, median_time_ms
from .evolution import evolve
from .predictor import AccuracyPredictor, fit, pairwise_accuracy, transfer
from .space import Arch, Frame, SearchSpace, UniformBits
from .supernet import ElasticMobileNetV2, train_supernet

STAGES = ("supernet", "pairs", "predictor", "cost", "evolve", "finalize")
DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "default.yaml")
LATENCY_FIELDS = {
    "deploy_latency_ms_batch1": "MEASURED: median wall time of the converted network (DeployEngine) on one image",
    "table_latency_ms_batch1": "PREDICTED by the latency table: the sum of its entries over every layer the "
                               "deployed network runs (cost.CostTable.latency_ms)",
    "table_over_measured": "table_latency_ms_batch1 / deploy_latency_ms_batch1",
    "table_latency_breakdown_ms": "the prediction split: searched layers on kernels / in float, fixed layers "
                                  "(stem, first block, head, pool, classifier), the engine call",
    "cost": "the search objective's cost (unit: cost_unit)",
}


def portable_spec(spec: str) -> str:
    """A data spec without machine paths: an absolute dataset root is reduced to its last component
    (``imagefolder:/data/cifar10-jpeg.tar.gz`` -> ``imagefolder:cifar10-jpeg.tar.gz``)."""
    kind, sep, root = spec.partition(":")
    if sep and os.path.isabs(root):
        return f"{kind}:{os.path.basename(root.rstrip(os.sep)) or root}"
    return spec

class Search:
    """APQ for ``cfg`` (its ``search`` section, cmn_ext.config.SearchConfig), stage by stage (``run``)."""

    def __init__(self, cfg: RunConfig | dict, progress: bool = True):
        cfg = as_run_config(cfg)
        self.run_dir = runner.run_dir_of(cfg)
        self.cfg = cfg = cfg.replace(run_dir=self.run_dir)
        self.sc = cfg.search
        self.progress = progress
        config_mod.save(cfg, self.run_dir)
        self.space = self.sc.space.build()
        # training, pairs, the cost table and the deploy timing all run here
        self.device = torch.device(self.sc.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.data = runner.build_data(cfg, augment=True)
        if self.data.val is None:
            raise ValueError("cmn search: needs a validation split (data.val_fraction > 0) for the pairs")
        self.resolution = int(self.data.input_size[1])
        self.stem_stride = self.sc.supernet.stem_stride
        # what the deployed network runs around the searched blocks (the latency table times it too)
        self.frame = Frame(in_channels=int(self.data.input_size[0]), last_channels=self.sc.supernet.last_channels,
                           num_classes=int(self.data.num_classes))
        self._net = None
        self._table = None

    def path(self, name: str) -> str:
        return os.path.join(self.run_dir, name)

    def loader(self, train: bool = True):
        return make_loader(self.data.train if train else self.data.train_plain, self.sc.supernet.batch_size,
                           train=True, seed=self.cfg.data.seed)

    # ---- stages --------------------------------------------------------------------------------------------
    def supernet(self) -> ElasticMobileNetV2:
        if self._net is not None:
            return self._net
        ss = self.sc.supernet
        torch.manual_seed(self.cfg.train.seed)  # the initial weights and the augmentation: one run, one supernet
        net = ElasticMobileNetV2(self.space, self.data.num_classes, in_channels=int(self.data.input_size[0]),
                                 stem_stride=self.stem_stride, last_channels=ss.last_channels)
        path = self.path("supernet.pt")
        if os.path.exists(path):
            load_state_into(net, expect_keys(load(path), path, ("state_dict",), "an APQ supernet file")["state_dict"],
                            path)
        else:
            records = train_supernet(net, self.loader(), epochs=ss.epochs.to_dict(), lr=ss.lr,
                                     kd_weight=ss.kd_weight, kd_temperature=ss.kd_temperature,
                                     device=self.device, seed=self.cfg.train.seed, progress=self.progress,
                                     log=runner.log)
            # every sampled sub-network updated the shared BN statistics: re-estimate them for the largest first
            acc = pairs_mod.measure(net, self.space.largest(), self.loader(train=False), self.data.val,
                                    calib_batches=self.sc.pairs.calib_batches, device=self.device)
            runner.log(f"[search] supernet: largest sub-network val top-1 {acc:.4f} (BN re-estimated)")
            save_atomic({"state_dict": net.state_dict(), "records": records, "largest_val_top1": acc}, path)
        self._net = net.to(self.device).eval()
        return self._net

    def pairs(self) -> dict:
        ps = self.sc.pairs
        net = self.supernet()
        calib = self.loader(train=False)
        kw = dict(calib_batches=ps.calib_batches, device=self.device, seed=ps.seed, shard=tuple(ps.shard),
                  progress=self.progress)
        fp = pairs_mod.collect(net, self.path("pairs"), "fp", ps.fp, calib, self.data.val, **kw)
        quant = pairs_mod.collect(net, self.path("pairs"), "quant", ps.quant, calib, self.data.val,
                                  finetune_steps=ps.finetune_steps, lr=ps.lr, **kw)
        return {"fp": fp, "quant": quant}

    def predictor(self) -> AccuracyPredictor:
        path = self.path("predictor.pt")
        size = self.space.encoding_size()
        model = AccuracyPredictor(size, self.sc.predictor.hidden)
        if os.path.exists(path):
            load_state_into(model, load(path), path)
            return model.eval()
        ps, pr = self.sc.pairs, self.sc.predictor
        fp = pairs_mod.load(self.path("pairs"), "fp")
        quant = pairs_mod.load(self.path("pairs"), "quant")
        if len(fp) < 10 or len(quant) < 10:
            raise ValueError(f"cmn search: the predictor needs pairs first (found {len(fp)} fp, {len(quant)} quant; "
                             "run the 'pairs' stage)")
        enc = lambda ps_: (torch.tensor([self.space.encode(Arch.from_dict(p["arch"])) for p in ps_]),  # noqa: E731
                           torch.tensor([p["acc"] for p in ps_]))
        rng = random.Random(0)
        rng.shuffle(fp)
        rng.shuffle(quant)
        n_fp_test, n_q_test = int(len(fp) * ps.holdout), int(len(quant) * ps.holdout)
        xf, yf = enc(fp[n_fp_test:])
        xft, yft = enc(fp[:n_fp_test])
        xq, yq = enc(quant[n_q_test:])
        xqt, yqt = enc(quant[:n_q_test])
        torch.manual_seed(0)
        fp_model = AccuracyPredictor(size, pr.hidden)
        fit(fp_model, xf, yf, epochs=pr.epochs, lr=pr.lr)
        report = {"pairs_fp": len(fp), "pairs_quant": len(quant), "holdout_fp": n_fp_test, "holdout_quant": n_q_test,
                  "fp_pairwise_acc": pairwise_accuracy(fp_model.predict(xft), yft), "quant_budgets": []}
        # the paper's comparison: transfer from the FP predictor vs from scratch, at equal quantized budgets
        for budget in sorted({min(b, len(xq)) for b in pr.budgets} | {len(xq)}):
            torch.manual_seed(0)
            tr, _ = transfer(fp_model, xq[:budget], yq[:budget], epochs=pr.transfer_epochs)
            scratch = AccuracyPredictor(size, pr.hidden)
            fit(scratch, xq[:budget], yq[:budget], epochs=pr.epochs, lr=pr.lr)
            report["quant_budgets"].append({"quant_pairs": budget,
                                            "transfer": pairwise_accuracy(tr.predict(xqt), yqt),
                                            "scratch": pairwise_accuracy(scratch.predict(xqt), yqt)})
            model = tr
        report["predictor_pairwise_acc"] = report["quant_budgets"][-1]["transfer"]
        runner.log("[search] predictor: " + json.dumps(report))
        write_text_atomic(self.path("predictor.json"), json.dumps(report, indent=2))
        save_atomic(model.state_dict(), path)
        return model.eval()

    def cost_table(self) -> CostTable:
        if self._table is None:
            self._table = CostTable(self.path("cost_table.json"), self.device, mode=self.sc.cost.table)
        return self._table

    def table_ms(self, arch: Arch) -> float:
        """The latency table's prediction for ``arch`` deployed (ms at batch 1, every layer it runs)."""
        return self.cost_table().latency_ms(self.space, arch, self.resolution, self.stem_stride, self.frame)

    def cost_fn(self):
        if self.sc.cost.objective == "bops":
            return lambda a: self.space.bops(a, self.resolution, self.stem_stride), "GBOPs", 1e-9
        if self.sc.cost.objective == "bitfusion":
            return lambda a: bitfusion_cost(self.space, a, self.resolution, self.stem_stride), "G bit-brick ops", 1e-9
        return self.table_ms, "ms", 1.0

    def cost(self) -> dict:
        table = self.cost_table()
        rng = random.Random(1)
        archs = [self.space.largest(b) for b in self.space.bits] + [self.space.sample(rng) for _ in range(50)]
        for a in archs:  # the table's most-used entries now; the search adds the rest as it needs them
            self.table_ms(a)
        table.save()
        return {"entries": len(table.entries), "device": table.device, "mode": table.mode}

    def evolve(self, uniform_bits: int | None = None) -> dict:
        """The joint search; with ``uniform_bits`` the architecture-only search at one bitwidth everywhere
        (the comparison at equal budget), in evolve_uniform<bits>.json."""
        path = self.path("evolve.json" if uniform_bits is None else f"evolve_uniform{uniform_bits}.json")
        if os.path.exists(path):
            with open(path) as f:
                return json.load(f)
        model = self.predictor()
        cost, unit, scale = self.cost_fn()
        largest8 = cost(self.space.largest(max(self.space.bits)))
        budget = self.sc.cost.budget * largest8  # a fraction of the largest 8-bit network's cost
        score = lambda archs: model.predict([self.space.encode(a) for a in archs]).tolist()  # noqa: E731
        space = self.space if uniform_bits is None else UniformBits(self.space, uniform_bits)
        res = evolve(space, score, cost, budget, self.sc.evolution, self.progress)
        if self.sc.cost.objective == "latency":
            self.cost_table().save()  # with the entries the search measured
        out = {"objective": self.sc.cost.objective, "unit": unit, "budget": budget * scale,
               "largest_8bit_cost": largest8 * scale, "best": res.best.to_dict(), "best_predicted": res.best_score,
               "best_cost": res.best_cost * scale, "history": res.history,
               "population": [{"arch": a.to_dict(), "predicted": s, "cost": c * scale} for a, s, c in res.population]}
        write_text_atomic(path, json.dumps(out))
        return out

    def finalize(self) -> dict:
        """The chosen network and the uniform 8-bit / 4-bit largest sub-networks, each quantized as specified,
        fine-tuned, evaluated on the test split, converted to the kernels and timed at batch 1; beside each
        measured latency, the latency table's prediction for the same network (whatever the objective)."""
        from ..nn import compare, convert
        from ..train.bn import recalibrate_bn

        ev = self.evolve()
        fs = self.sc.finalize
        net, model = self.supernet(), self.predictor()
        cost, unit, scale = self.cost_fn()
        loader = self.loader()
        low, high = min(self.space.bits), max(self.space.bits)
        candidates = {"chosen": Arch.from_dict(ev["best"]),
                      # the same budget, architecture-only search with uniform bits (the equal-latency baselines)
                      f"uniform_{high}bit_same_budget": Arch.from_dict(self.evolve(high)["best"]),
                      f"uniform_{low}bit_same_budget": Arch.from_dict(self.evolve(low)["best"]),
                      f"largest_{high}bit": self.space.largest(high), f"largest_{low}bit": self.space.largest(low)}
        out = {}
        for name, arch in candidates.items():
            sub = net.extract(arch)
            pairs_mod.quantize_subnet(sub, self.space, arch)
            pairs_mod.finetune(sub, loader, fs.finetune_epochs * len(loader), fs.lr, self.device)
            recalibrate_bn(sub, self.loader(train=False), self.sc.pairs.calib_batches, self.device)
            acc = evaluate(sub, self.data.test, device=self.device)["top1"]
            sub = sub.eval()
            deploy, report = convert(sub)
            batches = [(x.to(self.device), y) for _, (x, y) in zip(range(2), make_loader(self.data.test, 64, train=False))]
            agree = compare(sub, deploy, batches)["argmax_agree"]
            x = self.data.test[0][0].unsqueeze(0).to(self.device)
            with torch.no_grad():
                ms = median_time_ms(lambda: deploy(x), self.device, fs.latency_reps)
            table_cost = cost(arch) * scale
            layers = self.space.deploy_layers(arch, self.resolution, self.stem_stride, self.frame)
            predicted = self.table_ms(arch)
            out[name] = {"arch": arch.to_dict(), "test_top1": acc, "predicted_val_top1": float(model.predict(
                [self.space.encode(arch)])[0]), "cost": table_cost, "cost_unit": unit,
                "bops": self.space.bops(arch, self.resolution, self.stem_stride),
                "deploy_latency_ms_batch1": ms, "table_latency_ms_batch1": predicted,
                "table_over_measured": predicted / ms if ms > 0 else None,
                "table_latency_breakdown_ms": self.cost_table().breakdown(self.space, arch, self.resolution,
                                                                          self.stem_stride, self.frame),
                "deploy_argmax_agree": agree,
                "layers_on_kernels": sum(r["kernel"] is not None for r in report), "layers": len(report),
                # the table's conv / linear layers and those it puts on a kernel, to compare with the two above
                "table_layers": sum(layer.kind not in ("call", "pool") for layer in layers),
                "table_layers_on_kernels": sum(deployed_kernel(layer) is not None for layer in layers)}
            runner.log(f"[search] {name}: test top-1 {acc:.4f}, {unit} {table_cost:.4g} (objective); latency at "
                       f"batch 1: measured {ms:.3f} ms, table {predicted:.3f} ms ({out[name]['layers_on_kernels']}/"
                       f"{len(report)} layers on kernels, argmax agree {agree:.3f})")
        self.cost_table().save()
        pred = json.load(open(self.path("predictor.json")))
        table = self.cost_table()
        summary = {"dataset": portable_spec(self.cfg.data.spec), "device": device_name(self.device),
                   "objective": ev["objective"],
                   "budget": ev["budget"], "unit": ev["unit"], "predictor": pred,
                   "predictor_pairwise_acc": pred["predictor_pairwise_acc"], "pairs_fp": pred["pairs_fp"],
                   "pairs_quant": pred["pairs_quant"],
                   "chosen_acc": out["chosen"]["test_top1"], "chosen_latency_ms": out["chosen"]["deploy_latency_ms_batch1"],
                   # the field names: the largest sub-network at the highest / lowest bits of the space
                   "baseline_8bit_acc": out[f"largest_{high}bit"]["test_top1"],
                   "baseline_8bit_latency_ms": out[f"largest_{high}bit"]["deploy_latency_ms_batch1"],
                   "baseline_4bit_acc": out[f"largest_{low}bit"]["test_top1"],
                   "baseline_4bit_latency_ms": out[f"largest_{low}bit"]["deploy_latency_ms_batch1"],
                   "uniform_same_budget": {k: {"acc": v["test_top1"], "latency_ms": v["deploy_latency_ms_batch1"]}
                                           for k, v in out.items() if k.startswith("uniform_")},
                   "latency_fields": LATENCY_FIELDS,
                   "latency_table": {"mode": table.mode, "entries": len(table.entries), "file": "cost_table.json"},
                   "space": dataclasses.asdict(self.space), "supernet": self.sc.supernet.to_dict(),
                   "candidates": out, "plot": self.plot(ev, out)}
        write_text_atomic(self.path("final.json"), json.dumps(summary, indent=2))
        if self.sc.results_dir:
            os.makedirs(self.sc.results_dir, exist_ok=True)
            name = self.sc.results_name or "apq_" + self.cfg.data.spec.split(":")[0]
            write_text_atomic(os.path.join(self.sc.results_dir, f"{name}.json"), json.dumps(summary, indent=2))
        return summary

    def plot(self, ev: dict, out: dict) -> str | None:
        """Predicted accuracy vs cost of the final population, the chosen point and the uniform baselines."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return None
        fig, ax = plt.subplots(figsize=(6, 4))
        pop = ev["population"]
        ax.scatter([p["cost"] for p in pop], [p["predicted"] for p in pop], s=8, c="0.6", label="final population")
        front, best = [], -1.0
        for p in sorted(pop, key=lambda p: p["cost"]):
            if p["predicted"] > best:
                front.append(p)
                best = p["predicted"]
        ax.plot([p["cost"] for p in front], [p["predicted"] for p in front], "k-", lw=1, label="Pareto front")
        names = list(out)  # chosen, uniform high / low at the same budget, largest high / low
        for name, marker in zip(names, ("r*", "mD", "cv", "bs", "g^")):
            c = out[name]
            ax.plot([c["cost"]], [c["predicted_val_top1"]], marker, ms=10, label=name.replace("_", " "))
        ax.axvline(ev["budget"], ls="--", c="0.3", lw=0.8, label="budget")
        ax.set_xlabel(f"cost ({ev['unit']}, table)")
        ax.set_ylabel("predicted accuracy")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(self.path("pareto.png"), dpi=120)
        plt.close(fig)
        return "pareto.png"  # relative to the run directory

    def run(self, stages=STAGES) -> dict:
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise ValueError(f"cmn search: unknown stage(s) {unknown}; stages are {list(STAGES)}")
        # One process owns the run directory, except shards of the pairs stage (each writes its own file).
        shard = tuple(self.sc.pairs.shard)
        sharded = tuple(stages) == ("pairs",) and int(shard[1]) > 1
        with run_dir_lock(self.run_dir) if not sharded else contextlib.nullcontext():
            return self._run(stages)

    def _run(self, stages) -> dict:
        result = {}
        for stage in STAGES:
            if stage not in stages:
                continue
            runner.log(f"[search] stage {stage}")
            value = getattr(self, stage)()
            if stage == "pairs":
                value = {k: len(v) for k, v in value.items()}
            elif stage in ("supernet", "predictor"):
                value = self.path(f"{stage}.pt")
            elif stage == "evolve":
                value = {k: value[k] for k in ("best_predicted", "best_cost", "budget", "unit")}
            elif stage == "finalize":
                value = self.path("final.json")
            result[stage] = value
        return result
