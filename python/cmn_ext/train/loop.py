"""The training loop: SGD/Adam, schedules, AMP on GPU, tqdm progress on stderr, a run directory with the
resolved config, metrics (JSON lines + CSV) and atomic best/last checkpoints, resume, and DDP under torchrun.

Run directory layout:
    config.yaml     the resolved configuration
    metrics.jsonl   one JSON object per epoch (also metrics.csv)
    last.pt         model, optimizer, schedule, pruner, epoch, RNG state (written every epoch)
    best.pt         the same at the best validation top-1 so far
"""

import contextlib
import csv
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Subset
from tqdm import tqdm

from . import distributed as ddp
from .bn import recalibrate_bn
from ..files import append_jsonl, expect_keys, load, load_state_into, save_atomic, write_text_atomic
from ..config import TrainConfig
from .schedules import make_optimizer, make_schedule


def _unwrap(model):
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _batches_on_device(dataset, batch_size: int, *, device, train: bool, seed: int = 0, rank: int = 0,
                       world: int = 1, channels_last: bool | None = None):
    """The fast path's batches (``cmn_ext.data.DeviceBatches``) when ``dataset`` holds its images as tensors,
    else None (then a DataLoader serves it)."""
    from ..data import DeviceBatches, tensor_view

    if tensor_view(dataset) is None:
        return None
    return DeviceBatches(dataset, batch_size, device=device, train=train, seed=seed, rank=rank, world=world,
                         channels_last=channels_last)


@torch.no_grad()
def evaluate(model: nn.Module, dataset, *, batch_size: int = 256, device=None, amp: bool = False,
             progress: bool = False, desc: str = "eval", workers: int = 0, channels_last: bool | None = None
             ) -> dict:
    """Top-1 / top-5 accuracy (fractions), mean cross-entropy and the sample count of ``model`` on
    ``dataset``. Under torchrun every rank evaluates a disjoint shard and the counts are summed.

    A dataset that holds its images as tensors (every one ``build_datasets`` makes) is evaluated from a copy
    on ``device``, in its order, with the same input values as the per-sample path; others go through a
    DataLoader. ``channels_last`` lays the inputs out channels-last (None: on CUDA only; on the CPU the
    contiguous layout keeps the results bit-identical to the DataLoader path's). The sums stay on the device
    until the end: no host synchronisation per batch."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    rank, size = ddp.world() if (torch.distributed.is_available() and torch.distributed.is_initialized()) else (0, 1)
    loader = _batches_on_device(dataset, batch_size, device=device, train=False, rank=rank, world=size,
                                channels_last=channels_last)
    if loader is None:
        shard = Subset(dataset, range(rank, len(dataset), size)) if size > 1 else dataset
        loader = torch.utils.data.DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=workers)
    memory = torch.channels_last if (device.type == "cuda" if channels_last is None else channels_last) \
        else torch.contiguous_format
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # correct top-1, correct top-5, loss
    n = 0
    for x, y in tqdm(loader, desc=desc, disable=not progress or rank != 0, file=sys.stderr, leave=False):
        x = x.to(device, non_blocking=True)
        x = x.contiguous(memory_format=memory) if x.dim() == 4 else x
        y = y.to(device, non_blocking=True)
        with _autocast(device, amp):
            logits = model(x)
        logits = logits.float()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        sums += torch.stack([(top[:, 0] == y).sum().double(), (top == y[:, None]).any(1).sum().double(),
                             F.cross_entropy(logits, y, reduction="sum").double()])
        n += len(y)
    model.train(was_training)
    correct1, correct5, loss = sums.tolist()
    correct1, correct5, loss, n = ddp.all_sum([correct1, correct5, loss, float(n)], device)
    n = int(n)
    return {"top1": correct1 / max(1, n), "top5": correct5 / max(1, n), "loss": loss / max(1, n), "n": n}


class Trainer:
    """Trains ``model`` on ``data.train``, validating on ``data.val`` (or ``data.test`` when there is no
    validation split) after every epoch. ``pruner`` (a ``cmn_ext.prune.Pruner``) gets its schedule hooks.

    ``cfg``: a ``cmn_ext.config.TrainConfig`` (or a mapping of its keys: epochs, batch_size, optimizer, lr,
    schedule, ...; see that class for every key and default). ``record`` (default: cfg) is stored under
    "config" in the checkpoints.
    """

    def __init__(self, model: nn.Module, data, cfg: TrainConfig | dict, run_dir: str | None = None, *, pruner=None,
                 device=None, progress: bool = True, resume: bool = False, record: dict | None = None):
        self.cfg = TrainConfig.from_dict(cfg)  # as given, or built and checked from a mapping
        self.record = record  # saved in every checkpoint (the full experiment config, to rebuild the model)
        self.epochs = self.cfg.epochs
        self.device = torch.device(device) if device is not None else ddp.default_device()
        self.distributed = ddp.setup(self.device)
        self.rank, self.world = ddp.world()
        self.is_main = self.rank == 0
        self.run_dir = run_dir
        self.progress = progress and self.is_main
        self.data, self.pruner = data, pruner
        torch.manual_seed(self.cfg.seed)
        self.model = model.to(self.device)
        self.net = (nn.parallel.DistributedDataParallel(self.model) if self.distributed else self.model)
        self.optimizer = make_optimizer(self.model.parameters(), self.cfg)
        self.schedule, self.schedule_on_metric = make_schedule(self.optimizer, self.cfg, self.epochs)
        self.start_epoch, self.best, self.history = 0, -math.inf, []
        self.eval_set = data.val if data.val is not None else data.test
        self.eval_split = "val" if data.val is not None else "test"
        if resume:
            self._resume()

    # --- checkpoints ---------------------------------------------------------------------------------------
    def _state(self, epoch: int) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict() if self.schedule is not None else {},
            "pruner": self.pruner.state_dict() if self.pruner is not None else {},
            "epoch": epoch,
            "best": self.best,
            "history": self.history,
            "rng": torch.get_rng_state(),
            "config": json.loads(json.dumps(self.record if self.record is not None else self.cfg.to_dict(), default=str)),
        }

    def _resume(self) -> None:
        path = os.path.join(self.run_dir or "", "last.pt")
        if not os.path.isfile(path):
            if self.is_main:
                print(f"[train] no checkpoint at {path}: starting from epoch 0", file=sys.stderr)
            return
        state = expect_keys(load(path, map_location=self.device), path,
                            ("model", "optimizer", "schedule", "pruner", "epoch", "best", "rng"), "a trainer checkpoint")
        load_state_into(self.model, state["model"], path)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.schedule is not None and state["schedule"]:
            self.schedule.load_state_dict(state["schedule"])
        if self.pruner is not None:
            self.pruner.load_state_dict(state["pruner"])
        torch.set_rng_state(state["rng"].cpu())
        self.start_epoch, self.best = int(state["epoch"]) + 1, float(state["best"])
        self.history = list(state.get("history", []))
        if self.is_main:
            self._rewrite_metrics()
            print(f"[train] resumed from {path} at epoch {self.start_epoch}", file=sys.stderr)

    def _rewrite_metrics(self) -> None:
        """The metrics files as the checkpoint knows them: rows of epochs logged after its save (a run killed or
        failing between the two) would otherwise appear twice once those epochs run again."""
        if not self.run_dir:
            return
        write_text_atomic(os.path.join(self.run_dir, "metrics.jsonl"),
                          "".join(json.dumps(row) + "\n" for row in self.history))
        path = os.path.join(self.run_dir, "metrics.csv")
        if os.path.exists(path):
            os.unlink(path)
        for row in self.history:
            self._append_csv(row)

    def _log(self, row: dict) -> None:
        self.history.append(row)
        if not (self.is_main and self.run_dir):
            return
        append_jsonl(os.path.join(self.run_dir, "metrics.jsonl"), row)
        self._append_csv(row)

    def _append_csv(self, row: dict) -> None:
        path = os.path.join(self.run_dir, "metrics.csv")
        new = not os.path.exists(path)
        with open(path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)

    # --- loop ------------------------------------------------------------------------------------------------
    # The data path (docs/training.md, "Data path"). Class defaults; set them on an instance before fit().
    fast_data = True      # a train set holding its images as tensors trains from a copy on the device
    channels_last = True  # inputs (and so activations) channels-last: the cuDNN / oneDNN fast layout on GPU and
    #                       CPU alike (ResNet-20 steps 1.06-1.25x faster on the 2-core VM); None: on CUDA only
    compile = False       # torch.compile the network for the training steps (True, or a mode such as
    #                       "reduce-overhead": CUDA graphs, possible since a step never syncs); first steps compile
    sync_every = None     # steps between host reads of the running sums (progress bar, NaN check); None: every
    #                       step on the CPU (free there), about ten times per epoch on a GPU

    def _channels_last(self) -> bool:
        return self.device.type == "cuda" if self.channels_last is None else bool(self.channels_last)

    def _net_for_steps(self):
        if not self.compile:
            return self.net
        if getattr(self, "_compiled_net", None) is None:
            mode = self.compile if isinstance(self.compile, str) else None
            self._compiled_net = torch.compile(self.net, mode=mode)
        return self._compiled_net

    def _loader(self, epoch: int):
        """The training batches of ``epoch``: ``DeviceBatches`` when the train set holds its images as tensors
        (and ``fast_data``), else a DataLoader (sharded by a DistributedSampler under DDP)."""
        from ..data import make_loader

        if self.fast_data:
            fast = getattr(self, "_device_batches", None)
            if fast is None or fast.dataset is not self.data.train:
                fast = _batches_on_device(self.data.train, self.cfg.batch_size, device=self.device, train=True,
                                          seed=self.cfg.seed, rank=self.rank, world=self.world,
                                          channels_last=self._channels_last())
                self._device_batches = fast
            if fast is not None:
                fast.set_epoch(epoch)
                return fast
        loader = make_loader(self.data.train, self.cfg.batch_size, train=True,
                             workers=self.cfg.workers, seed=self.cfg.seed + epoch,
                             distributed=self.distributed)
        if self.distributed:
            loader.sampler.set_epoch(epoch)
        return loader

    def train_epoch(self, epoch: int) -> dict:
        self.net.train()
        amp = self.cfg.amp
        clip = self.cfg.grad_clip
        loader = self._loader(epoch)
        net = self._net_for_steps()
        memory = torch.channels_last if self._channels_last() else torch.contiguous_format
        every = self.sync_every or (1 if self.device.type == "cpu" else max(1, len(loader) // 10))
        # The running sums stay on the device; the host reads them only every `every` steps.
        sums = torch.zeros(2, dtype=torch.float64, device=self.device)  # loss x samples, correct
        n = 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{self.epochs}", disable=not self.progress, file=sys.stderr,
                   leave=False)
        for step, (x, y) in enumerate(bar, 1):
            x = x.to(self.device, non_blocking=True)
            x = x.contiguous(memory_format=memory) if x.dim() == 4 else x
            y = y.to(self.device, non_blocking=True)
            with _autocast(self.device, amp):
                logits = net(x)
            loss = F.cross_entropy(logits.float(), y)
            sums += torch.stack([loss.detach().double() * len(y), (logits.detach().argmax(1) == y).sum().double()])
            n += len(y)
            if step % every == 0 or step == len(loader):
                loss_sum, correct = sums.tolist()
                if not math.isfinite(loss_sum):  # checked before this step's update (every step on the CPU)
                    bad = float(loss.detach()) if not torch.isfinite(loss) else loss_sum / n
                    raise FloatingPointError(f"train: loss became {bad} at epoch {epoch + 1}; lower 'lr'")
                bar.set_postfix(loss=f"{loss_sum / n:.3f}", acc=f"{correct / n:.3f}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), float(clip))
            self.optimizer.step()
            if self.pruner is not None:
                self.pruner.after_step()
        loss_sum, correct = sums.tolist()
        loss_sum, correct, n = ddp.all_sum([loss_sum, correct, float(n)], self.device)
        return {"train_loss": loss_sum / max(1, n), "train_top1": correct / max(1, n)}

    def fit(self) -> dict:
        if self.is_main and self.run_dir:
            os.makedirs(self.run_dir, exist_ok=True)
        for epoch in range(self.start_epoch, self.epochs):
            t0 = time.time()
            if self.pruner is not None:
                self.pruner.on_epoch_start(epoch)
            row = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"]}
            row.update(self.train_epoch(epoch))
            if self.pruner is not None:
                self.pruner.on_epoch_end(epoch)
                self._recalibrate_after_zeroing(epoch)
            ev = evaluate(self.model, self.eval_set, batch_size=self.cfg.eval_batch_size,
                          device=self.device, amp=self.cfg.amp, progress=self.progress)
            row.update({f"{self.eval_split}_{k}": v for k, v in ev.items() if k != "n"})
            if self.pruner is not None:
                from ..prune import pruned_fraction

                row["pruned"] = pruned_fraction(self.model)
            row["seconds"] = round(time.time() - t0, 2)
            if self.schedule is not None:
                self.schedule.step(ev["top1"]) if self.schedule_on_metric else self.schedule.step()
            improved = ev["top1"] > self.best
            self.best = max(self.best, ev["top1"])
            self._log(row)
            if self.is_main:
                print(f"[train] epoch {epoch + 1}/{self.epochs}  loss {row['train_loss']:.4f}  "
                      f"{self.eval_split} top1 {ev['top1']:.4f}  lr {row['lr']:.3g}  {row['seconds']}s",
                      file=sys.stderr)
                if self.run_dir:
                    state = self._state(epoch)
                    save_atomic(state, os.path.join(self.run_dir, "last.pt"))
                    if improved:
                        save_atomic(state, os.path.join(self.run_dir, "best.pt"))
        out = {"best_top1": self.best, "epochs": self.epochs, "history": self.history}
        if self.pruner is not None:
            self.pruner.finalize()
            if self._recalibrate_after_zeroing(self.epochs):
                ev = evaluate(self.model, self.eval_set, batch_size=self.cfg.eval_batch_size,
                              device=self.device, amp=self.cfg.amp)
                out["final_top1"] = ev["top1"]
                if self.is_main:
                    print(f"[train] final model, BN recalibrated: {self.eval_split} top1 {ev['top1']:.4f}",
                          file=sys.stderr)
        return out

    def _recalibrate_after_zeroing(self, epoch: int) -> bool:
        """A soft pruning schedule zeroes filters at every epoch end (and its finalize zeroes their BN scale and
        shift), after the BN running statistics were collected: re-estimate them, so that validation and the
        final model see the network as it now is. Training itself uses batch statistics and is unaffected."""
        batches = self.cfg.bn_recalibrate
        if self.pruner.schedule != "soft" or batches <= 0:
            return False
        recalibrate_bn(self.model, self._loader(epoch), batches, self.device)
        return True
