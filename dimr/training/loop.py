"""The training loop: everything it does is decided by the run config saved in `run_dir`.

Resume is running the same command again (EDM2): the newest checkpoint is found by file name, the
data order restarts at the image counter, and every random draw is seeded from the run seed and the
image's place in the data stream (`train.draws: sample`; the first versions': from (seed, step, rank,
micro-batch)), so a run killed at any moment ends bit-identical on the CPU, and the same run on 1 or 8
processes, at any micro-batch, draws the same noise for the same image. Dropout masks are the exception:
they come from the global RNG, seeded per (step, rank).
"""

import contextlib
import copy
import json
import math
import signal
import sys
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from dimr.config import TrainConfig, dataclass_from_dict, train_subset
from dimr.data import build_dataset
from dimr.diffusion import build_objective
from dimr.diffusion.noise import rand
from dimr.errors import EXIT_REQUEUE as EXIT_INTERRUPTED
from dimr.errors import DimrError
from dimr.io import atomic_write_text, stale_temp_files
from dimr.models import build_model
from dimr.models.checkpointing import block_lists, parse_every, set_checkpointing
from dimr.run_config import train_identity
from dimr.training import distributed
from dimr.training.checkpoint import (
    FINAL_NETWORK,
    latest_checkpoint,
    load_state,
    network_state,
    save_checkpoint,
    save_snapshot,
    save_state,
)
from dimr.training.data_stream import SeededItems, StreamBatchSampler, derived_seed, item_seed
from dimr.training.memory import training_choice
from dimr.training.optim import build_optimizer, ema_decay, learning_rate, update_ema

LOG_FILE = "training_log.jsonl"


class TrainingDiverged(DimrError):
    """The loss became non-finite; the last good checkpoint is kept."""


class StopFlag:
    """Set by SIGUSR2 (SLURM pre-emption / time limit via submitit) or SIGTERM; checked per step."""

    def __init__(self):
        self.signum = None
        for sig in (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT):  # Ctrl-C saves too
            signal.signal(sig, self._handler)

    def _handler(self, signum, frame):
        self.signum = signum


def train_section(cfg: dict) -> TrainConfig:
    """The run's `train` section as its dataclass (validated again: a hand-edited config.json is caught)."""
    return dataclass_from_dict(TrainConfig, cfg["train"], "train")


def training_loop(run_dir, cfg: dict, *, device: str | None = None, batch_gpu: int | str | None = None,
                  num_workers: int = 0, compile_model: bool = False, stop_at_kimg: float | None = None,
                  checkpoint_blocks: str | None = None,
                  progress: bool | None = None) -> Path:
    """Train (or resume) the run in `run_dir`; return the path of the finished network."""
    run_dir = Path(run_dir)
    final_path = run_dir / FINAL_NETWORK
    if final_path.exists():  # finished: verified (content hash, training settings), never retrained
        load_state(final_path, train_identity(cfg), "network", train_subset(cfg))
        return final_path
    train = train_section(cfg)  # typed: attributes, not keys
    # Checkpoints carry the training sections only: a sampling or evaluation change never invalidates them.
    config_sha, train_cfg = train_identity(cfg), train_subset(cfg)
    dev = distributed.local_device(device)
    rank, world = distributed.init_from_env(dev)
    per_rank = train.batch_size // world
    if per_rank * world != train.batch_size:
        raise DimrError(f"train.batch_size={train.batch_size} is not divisible by {world} processes")
    gpu_bytes = torch.cuda.get_device_properties(dev).total_memory if dev.type == "cuda" else None
    micro, checkpoint_blocks, plan_note = training_choice(
        cfg["model"], per_rank, world, train.precision, train.draws, batch_gpu or "auto",
        checkpoint_blocks or "auto", gpu_bytes)
    if micro <= 0 or per_rank % micro:
        raise DimrError(f"--batch-gpu {micro} must divide the per-process batch {per_rank}")
    if plan_note and rank == 0:
        print(plan_note, flush=True)
    total_steps = math.ceil(train.total_kimg * 1000 / train.batch_size)
    stop_steps = total_steps if stop_at_kimg is None else min(
        total_steps, math.ceil(stop_at_kimg * 1000 / train.batch_size))

    dataset = build_dataset(cfg["data"], "train")  # validated before any compute
    torch.manual_seed(cfg["seed"])  # initial weights depend only on the run seed
    model = build_model(cfg["model"]).to(dev)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    if checkpoint_blocks != "0":  # memory for time; the same weights (dimr/models/checkpointing.py)
        set_checkpointing(model, parse_every(checkpoint_blocks, len(block_lists(model))))
    optimizer = build_optimizer(model, train)
    objective = build_objective(cfg["diffusion"])

    state = latest_checkpoint(run_dir, config_sha, train_cfg)
    step = 0
    if state is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        if rank == 0:
            truncate_log(run_dir / LOG_FILE, state["cur_nimg"])
            print(f"resuming {run_dir} from kimg {state['cur_nimg'] / 1000:.3f} (step {step})", flush=True)
    elif rank == 0:
        truncate_log(run_dir / LOG_FILE, 0)  # killed before its first checkpoint: the log starts again too
    if rank == 0:  # one trainer per run folder: temp files left here are from killed writes
        for tmp in stale_temp_files(run_dir) + stale_temp_files(run_dir / "checkpoints"):
            tmp.unlink(missing_ok=True)
    del state

    net = model
    if world > 1:
        # Heads of lower branches get no gradient under the single-scale loss.
        net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None,
                                      find_unused_parameters=True)
    if compile_model:
        net = torch.compile(net)
    keyed = train.draws == "sample"
    sampler = StreamBatchSampler(len(dataset), train.batch_size, cfg["seed"], rank, world, step, keyed)
    loader = iter(torch.utils.data.DataLoader(SeededItems(dataset) if keyed else dataset,
                                              batch_sampler=sampler, num_workers=num_workers,
                                              pin_memory=dev.type == "cuda"))
    train_step = TrainStep(net, model, ema, optimizer, objective, cfg, micro, rank, world)
    stop = StopFlag()
    ckpt_every = max(1, round(train.checkpoint_kimg * 1000 / train.batch_size))
    log_every = max(1, round(train.log_kimg * 1000 / train.batch_size))
    snap_every = round(train.snapshot_kimg * 1000 / train.batch_size)
    bar = make_progress(progress, rank, total_steps, step)
    window = {"loss": 0.0, "n": 0, "t0": time.perf_counter(), "nimg": 0, "stats": {}}

    while step < stop_steps:
        # Dropout (and under draws "rank", the augmentations: flips, latent posterior samples) draws
        # from the global RNG: reseed it per step so a resumed run repeats them.
        if keyed:
            x_all, y_all = next(loader)  # each item seeds its own augmentation (SeededItems)
            torch.manual_seed(derived_seed(cfg["seed"], step, rank, -1))
        else:
            torch.manual_seed(derived_seed(cfg["seed"], step, rank, -1))
            x_all, y_all = next(loader)  # exact with --workers 0
        step_loss, stats = train_step(x_all, y_all, step)
        if not torch.isfinite(step_loss):
            raise TrainingDiverged(
                f"non-finite loss ({step_loss.item()}) at step {step} (kimg "
                f"{step * train.batch_size / 1000:.3f}); the run stopped and its last good checkpoint "
                f"under {run_dir / 'checkpoints'} is kept. Lower train.lr or check the data.")
        train_step.finish(step)
        lr = train_step.lr
        for k, v in stats.items():
            window["stats"][k] = window["stats"].get(k, 0.0) + v
        step += 1
        window["loss"] += step_loss.item()
        window["n"] += 1
        window["nimg"] += train.batch_size
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss.item():.4f}")

        done = step >= stop_steps
        if rank == 0 and (step % log_every == 0 or done):
            write_log_line(run_dir / LOG_FILE, step, train, lr, window, progress_lines=bar is None)
        if snap_every and step % snap_every == 0 and rank == 0:
            save_snapshot(run_dir, cfg, ema, step * train.batch_size)
        interrupted = stop.signum is not None
        if step % ckpt_every == 0 or done or interrupted:
            if rank == 0:
                save_checkpoint(run_dir, {
                    "cur_nimg": step * train.batch_size, "step": step, "config_sha256": config_sha,
                    "train_config": train_cfg,
                    "model": model.state_dict(), "ema": ema.state_dict(),
                    "optimizer": optimizer.state_dict()}, train.keep_checkpoints)
            distributed.barrier()
        if interrupted and not done:
            print(f"signal {stop.signum}: saved step {step}, exiting {EXIT_INTERRUPTED} to be requeued",
                  flush=True)
            distributed.shutdown()
            sys.exit(EXIT_INTERRUPTED)

    if bar is not None:
        bar.close()
    if step >= total_steps and rank == 0:
        save_state(final_path, {**network_state(cfg, ema=ema.state_dict(), model=model.state_dict(),
                                                cur_nimg=step * train.batch_size),
                                "config_sha256": config_sha, "train_config": train_cfg})
    distributed.barrier()
    distributed.shutdown()
    return final_path


class TrainStep:
    """One optimiser step on a global batch: micro-batches, label dropout, loss, backward.

    Split in two so the loop can check the loss before anything is changed: `__call__` computes
    gradients, `finish` clips, steps the optimiser and updates the EMA. The benchmarks time this
    same object, never a copy of the loop.
    """

    def __init__(self, net, model, ema, optimizer, objective, cfg, micro, rank=0, world=1):
        self.net, self.model, self.ema, self.optimizer, self.objective = net, model, ema, optimizer, objective
        self.train, self.seed, self.micro = train_section(cfg), cfg["seed"], micro
        self.rank, self.world = rank, world
        self.null_class = cfg["model"]["num_classes"]
        self.device = next(model.parameters()).device
        self.autocast_enabled = self.train.precision == "bf16"
        self.lr = 0.0

    def __call__(self, x_all, y_all, step: int):
        train, dev = self.train, self.device
        self.lr = learning_rate(train, step * train.batch_size)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        self.optimizer.zero_grad(set_to_none=True)
        num_micro = max(1, len(x_all) // self.micro)
        step_loss = torch.zeros((), device=dev)
        stats_sum = {}
        for m in range(num_micro):
            x = x_all[m * self.micro:(m + 1) * self.micro].to(dev, non_blocking=True)
            y = y_all[m * self.micro:(m + 1) * self.micro].to(dev, non_blocking=True)
            gen = self.generators(step, m, len(x))
            # Label dropout to the null class for classifier-free guidance.
            drop = rand(y.shape, gen, dev, torch.float32) < train.label_dropout
            y = torch.where(drop, torch.full_like(y, self.null_class), y)
            last = m == num_micro - 1
            ctx = self.net.no_sync() if (self.world > 1 and not last) else contextlib.nullcontext()
            with ctx, torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.autocast_enabled):
                loss, stats = self.objective.loss(self.net, x, y, generator=gen)
            (loss / num_micro).backward()
            step_loss += loss.detach() / num_micro
            for k, v in stats.items():
                stats_sum[k] = stats_sum.get(k, 0.0) + float(v) / num_micro
        return distributed.all_reduce_mean(step_loss), stats_sum

    def generators(self, step: int, m: int, n: int):
        """The generator(s) of micro-batch m: one per image, keyed by its stream position (draws
        "sample"), or one for the micro-batch, keyed by (seed, step, rank, m) (draws "rank")."""
        if self.train.draws == "rank":
            return torch.Generator(self.device).manual_seed(derived_seed(self.seed, step, self.rank, m))
        batch = self.train.batch_size
        first = step * batch + self.rank * (batch // self.world) + m * self.micro
        return [torch.Generator(self.device).manual_seed(item_seed(self.seed, p))
                for p in range(first, first + n)]

    def finish(self, step: int):
        if self.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.train.grad_clip)
        self.optimizer.step()
        update_ema(self.ema, self.model, ema_decay(self.train, step))


def make_progress(progress, rank, total, initial):
    """A tqdm bar on a terminal; plain log lines otherwise (SLURM logs, CI)."""
    if rank != 0 or not (sys.stderr.isatty() if progress is None else progress):
        return None
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)


def write_log_line(path: Path, step: int, train: TrainConfig, lr: float, window: dict, progress_lines: bool):
    """Append one JSON line of averages over the window since the last line, then reset it."""
    now = time.perf_counter()
    n = max(window["n"], 1)
    entry = {"step": step, "kimg": step * train.batch_size / 1000, "loss": window["loss"] / n,
             "lr": lr, "images_per_s": window["nimg"] / max(now - window["t0"], 1e-9)}
    entry.update({k: v / n for k, v in window["stats"].items()})
    with open(path, "a") as f:
        f.write(json.dumps(entry) + "\n")
    if progress_lines:
        print(f"kimg {entry['kimg']:.3f}  loss {entry['loss']:.4f}  lr {lr:.2e}  "
              f"{entry['images_per_s']:.1f} img/s", flush=True)
    window.update(loss=0.0, n=0, t0=now, nimg=0, stats={})


def truncate_log(path: Path, cur_nimg: int):
    """Drop log lines written after the checkpoint we resume from, so the log has no repeats."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["kimg"] * 1000 <= cur_nimg + 1e-6:
                keep.append(line)
        except (json.JSONDecodeError, KeyError):
            continue  # a line cut by a kill mid-write
    atomic_write_text(path, "".join(line + "\n" for line in keep))
