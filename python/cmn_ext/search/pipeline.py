"""``cmn search``: APQ end to end, in resumable stages, each writing into the run directory and skipped when
its result exists:

  supernet   train the elastic MobileNetV2 with progressive shrinking          -> supernet.pt
  pairs      measure (arch, accuracy) pairs, full precision and quantized       -> pairs/*.jsonl
  predictor  FP predictor; quantized predictor by transfer and from scratch     -> predictor.pt, predictor.json
  cost       latency table of the searched layers, measured on our kernels     -> cost_table.json
  evolve     evolutionary search under the budget, scored by the predictor     -> evolve.json
  finalize   the chosen network and the uniform 8/4-bit largest sub-networks:
             quantize, fine-tune, evaluate, convert to the kernels, time        -> final.json, pareto.png
"""

from __future__ import annotations

import contextlib
import json
import os
import random

import torch

from .. import config as config_mod
from .. import runner
from ..data import make_loader
from ..files import expect_keys, load, load_state_into, run_dir_lock, save_atomic, write_text_atomic
from ..train.loop import evaluate
from . import pairs as pairs_mod
from .cost import CostTable, device_name, median_time_ms
from .evolution import EvolutionConfig, evolve
from .predictor import AccuracyPredictor, fit, pairwise_accuracy, transfer
from .space import Arch, SearchSpace, UniformBits
from .supernet import ElasticMobileNetV2, train_supernet

STAGES = ("supernet", "pairs", "predictor", "cost", "evolve", "finalize")
DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "default.yaml")
DEFAULTS = {
    "space": {},
    "supernet": {"last_channels": 1280, "stem_stride": 1, "batch_size": 128, "lr": 0.05,
                 "epochs": {"largest": 10, "kernel": 5, "depth": 5, "expand": 5}},
    "pairs": {"fp": 2000, "quant": 300, "holdout": 0.2, "calib_batches": 20, "finetune_steps": 50, "lr": 0.005,
              "seed": 0, "shard": [0, 1]},
    "predictor": {"hidden": 400, "epochs": 300, "lr": 1e-3, "transfer_epochs": 150, "budgets": [25, 50, 100, 200]},
    "device": None,          # default: cuda when available, else cpu
    "cost": {"objective": "latency", "budget": 0.7},
    "evolution": {"population": 100, "parents": 25, "mutations": 50, "crossovers": 50, "mutate_prob": 0.1,
                  "generations": 500, "seed": 0},
    "finalize": {"finetune_epochs": 2, "lr": 0.005, "latency_reps": 30},
    "results_dir": None,     # also write the summary to <results_dir>/<results_name>.json
    "results_name": None,    # default apq_<dataset>
}


def _space(sc: dict) -> SearchSpace:
    kw = {k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
          for k, v in (sc.get("space") or {}).items()}
    return SearchSpace(**kw)


class Search:
    def __init__(self, cfg: dict, progress: bool = True):
        self.cfg = cfg
        self.sc = config_mod.merge(DEFAULTS, cfg.get("search") or {})
        self.progress = progress
        self.run_dir = runner.run_dir_of(cfg)
        write_text_atomic(os.path.join(self.run_dir, "config.yaml"), config_mod.dump(cfg))
        self.space = _space(self.sc)
        # training, pairs, the cost table and the deploy timing all run here
        self.device = torch.device(self.sc.get("device") or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.data = runner.build_data(cfg, augment=True)
        if self.data.val is None:
            raise ValueError("cmn search: needs a validation split (data.val_fraction > 0) for the pairs")
        self.resolution = int(self.data.input_size[1])
        self.stem_stride = int(self.sc["supernet"]["stem_stride"])
        self._net = None
        self._table = None

    def path(self, name: str) -> str:
        return os.path.join(self.run_dir, name)

    def loader(self, train: bool = True):
        return make_loader(self.data.train if train else self.data.train_plain, int(self.sc["supernet"]["batch_size"]),
                           train=True, seed=int(self.cfg["data"].get("seed", 0)))

    # ---- stages --------------------------------------------------------------------------------------------
    def supernet(self) -> ElasticMobileNetV2:
        if self._net is not None:
            return self._net
        ss = self.sc["supernet"]
        net = ElasticMobileNetV2(self.space, self.data.num_classes, in_channels=int(self.data.input_size[0]),
                                 stem_stride=self.stem_stride, last_channels=int(ss["last_channels"]))
        path = self.path("supernet.pt")
        if os.path.exists(path):
            load_state_into(net, expect_keys(load(path), path, ("state_dict",), "an APQ supernet file")["state_dict"],
                            path)
        else:
            records = train_supernet(net, self.loader(), epochs=dict(ss["epochs"]), lr=float(ss["lr"]),
                                     device=self.device, progress=self.progress, log=runner.log)
            # every sampled sub-network updated the shared BN statistics: re-estimate them for the largest first
            acc = pairs_mod.measure(net, self.space.largest(), self.loader(train=False), self.data.val,
                                    calib_batches=int(self.sc["pairs"]["calib_batches"]), device=self.device)
            runner.log(f"[search] supernet: largest sub-network val top-1 {acc:.4f} (BN re-estimated)")
            save_atomic({"state_dict": net.state_dict(), "records": records, "largest_val_top1": acc}, path)
        self._net = net.to(self.device).eval()
        return self._net

    def pairs(self) -> dict:
        ps = self.sc["pairs"]
        net = self.supernet()
        calib = self.loader(train=False)
        kw = dict(calib_batches=int(ps["calib_batches"]), device=self.device, seed=int(ps["seed"]),
                  shard=tuple(ps["shard"]), progress=self.progress)
        fp = pairs_mod.collect(net, self.path("pairs"), "fp", int(ps["fp"]), calib, self.data.val, **kw)
        quant = pairs_mod.collect(net, self.path("pairs"), "quant", int(ps["quant"]), calib, self.data.val,
                                  finetune_steps=int(ps["finetune_steps"]), lr=float(ps["lr"]), **kw)
        return {"fp": fp, "quant": quant}

    def predictor(self) -> AccuracyPredictor:
        path = self.path("predictor.pt")
        size = self.space.encoding_size()
        model = AccuracyPredictor(size, int(self.sc["predictor"]["hidden"]))
        if os.path.exists(path):
            load_state_into(model, load(path), path)
            return model.eval()
        ps, pr = self.sc["pairs"], self.sc["predictor"]
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
        n_fp_test, n_q_test = int(len(fp) * float(ps["holdout"])), int(len(quant) * float(ps["holdout"]))
        xf, yf = enc(fp[n_fp_test:])
        xft, yft = enc(fp[:n_fp_test])
        xq, yq = enc(quant[n_q_test:])
        xqt, yqt = enc(quant[:n_q_test])
        torch.manual_seed(0)
        fp_model = AccuracyPredictor(size, int(pr["hidden"]))
        fit(fp_model, xf, yf, epochs=int(pr["epochs"]), lr=float(pr["lr"]))
        report = {"pairs_fp": len(fp), "pairs_quant": len(quant), "holdout_fp": n_fp_test, "holdout_quant": n_q_test,
                  "fp_pairwise_acc": pairwise_accuracy(fp_model.predict(xft), yft), "quant_budgets": []}
        # the paper's comparison: transfer from the FP predictor vs from scratch, at equal quantized budgets
        for budget in sorted({min(int(b), len(xq)) for b in pr["budgets"]} | {len(xq)}):
            torch.manual_seed(0)
            tr, _ = transfer(fp_model, xq[:budget], yq[:budget], epochs=int(pr["transfer_epochs"]))
            scratch = AccuracyPredictor(size, int(pr["hidden"]))
            fit(scratch, xq[:budget], yq[:budget], epochs=int(pr["epochs"]), lr=float(pr["lr"]))
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
            self._table = CostTable(self.path("cost_table.json"), self.device)
        return self._table

    def cost_fn(self):
        if self.sc["cost"]["objective"] == "bops":
            return lambda a: self.space.bops(a, self.resolution, self.stem_stride), "GBOPs", 1e-9
        if self.sc["cost"]["objective"] != "latency":
            raise ValueError(f"cmn search: 'search.cost.objective' expected latency or bops, got "
                             f"{self.sc['cost']['objective']!r}")
        table = self.cost_table()
        return lambda a: table.latency_ms(self.space, a, self.resolution, self.stem_stride), "ms", 1.0

    def cost(self) -> dict:
        table = self.cost_table()
        rng = random.Random(1)
        archs = [self.space.largest(b) for b in self.space.bits] + [self.space.sample(rng) for _ in range(50)]
        for a in archs:  # the table's most-used entries now; the search adds the rest as it needs them
            table.latency_ms(self.space, a, self.resolution, self.stem_stride)
        table.save()
        return {"entries": len(table.entries), "device": table.device}

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
        budget = float(self.sc["cost"]["budget"]) * largest8  # a fraction of the largest 8-bit network's cost
        score = lambda archs: model.predict([self.space.encode(a) for a in archs]).tolist()  # noqa: E731
        ec = self.sc["evolution"]
        space = self.space if uniform_bits is None else UniformBits(self.space, uniform_bits)
        res = evolve(space, score, cost, budget, EvolutionConfig(**{k: ec[k] for k in ec}), self.progress)
        if self.sc["cost"]["objective"] == "latency":
            self.cost_table().save()  # with the entries the search measured
        out = {"objective": self.sc["cost"]["objective"], "unit": unit, "budget": budget * scale,
               "largest_8bit_cost": largest8 * scale, "best": res.best.to_dict(), "best_predicted": res.best_score,
               "best_cost": res.best_cost * scale, "history": res.history,
               "population": [{"arch": a.to_dict(), "predicted": s, "cost": c * scale} for a, s, c in res.population]}
        write_text_atomic(path, json.dumps(out))
        return out

    def finalize(self) -> dict:
        """The chosen network and the uniform 8-bit / 4-bit largest sub-networks, each quantized as specified,
        fine-tuned, evaluated on the test split, converted to the kernels and timed at batch 1."""
        from ..nn import compare, convert
        from ..train.bn import recalibrate_bn

        ev = self.evolve()
        fs = self.sc["finalize"]
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
            pairs_mod.finetune(sub, loader, int(fs["finetune_epochs"]) * len(loader), float(fs["lr"]), self.device)
            recalibrate_bn(sub, self.loader(train=False), int(self.sc["pairs"]["calib_batches"]), self.device)
            acc = evaluate(sub, self.data.test, device=self.device)["top1"]
            sub = sub.eval()
            deploy, report = convert(sub)
            batches = [(x.to(self.device), y) for _, (x, y) in zip(range(2), make_loader(self.data.test, 64, train=False))]
            agree = compare(sub, deploy, batches)["argmax_agree"]
            x = self.data.test[0][0].unsqueeze(0).to(self.device)
            with torch.no_grad():
                ms = median_time_ms(lambda: deploy(x), self.device, int(fs["latency_reps"]))
            table_cost = cost(arch) * scale
            out[name] = {"arch": arch.to_dict(), "test_top1": acc, "predicted_val_top1": float(model.predict(
                [self.space.encode(arch)])[0]), "cost": table_cost, "cost_unit": unit,
                "bops": self.space.bops(arch, self.resolution, self.stem_stride),
                "deploy_latency_ms_batch1": ms, "deploy_argmax_agree": agree,
                "layers_on_kernels": sum(r["kernel"] is not None for r in report), "layers": len(report)}
            runner.log(f"[search] {name}: test top-1 {acc:.4f}, {unit} {table_cost:.4g} (table), "
                       f"deploy {ms:.3f} ms at batch 1 ({out[name]['layers_on_kernels']}/{len(report)} layers "
                       f"on kernels, argmax agree {agree:.3f})")
        if self.sc["cost"]["objective"] == "latency":
            self.cost_table().save()
        pred = json.load(open(self.path("predictor.json")))
        summary = {"dataset": self.cfg["data"]["spec"], "device": device_name(self.device), "objective": ev["objective"],
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
                   "candidates": out, "plot": self.plot(ev, out)}
        write_text_atomic(self.path("final.json"), json.dumps(summary, indent=2))
        if self.sc.get("results_dir"):
            os.makedirs(self.sc["results_dir"], exist_ok=True)
            name = self.sc.get("results_name") or "apq_" + self.cfg["data"]["spec"].split(":")[0]
            write_text_atomic(os.path.join(self.sc["results_dir"], f"{name}.json"), json.dumps(summary, indent=2))
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
        path = self.path("pareto.png")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path

    def run(self, stages=STAGES) -> dict:
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise ValueError(f"cmn search: unknown stage(s) {unknown}; stages are {list(STAGES)}")
        # One process owns the run directory, except shards of the pairs stage (each writes its own file).
        shard = tuple(self.sc["pairs"].get("shard") or (0, 1))
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
