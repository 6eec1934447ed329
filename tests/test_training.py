"""Training: bit-exact resume after SIGKILL, loud failures on bad checkpoints, configs and losses."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dimr.errors import CheckpointError, ConfigError
from dimr.run_config import resolve_run_config, write_run_config
from dimr.training.checkpoint import FINAL_NETWORK, list_checkpoints
from dimr.training.data_stream import StreamBatchSampler
from dimr.training.loop import LOG_FILE, TrainingDiverged, training_loop

# 24 steps of batch 16 on the smallest multi-branch preset: a few seconds on 2 cores.
TINY = ["--preset", "tiny-dimr", "--set", "train.batch_size=16", "--set", "train.total_kimg=0.384",
        "--set", "train.checkpoint_kimg=0.064", "--set", "train.log_kimg=0.032",
        "--set", "train.warmup_kimg=0.1", "--set", "train.keep_checkpoints=100"]


def dimr_cmd(*args):
    return [sys.executable, "-m", "dimr.cli", *args]


def env_one_thread():
    # Identical thread counts in both runs: CPU reductions are deterministic for a fixed count.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def final_weights(run_dir):
    return torch.load(Path(run_dir) / FINAL_NETWORK, map_location="cpu", weights_only=True)


def test_stream_sampler_restarts_at_any_step():
    full = StreamBatchSampler(50, 8, seed=3, rank=0, world=1)
    restarted = StreamBatchSampler(50, 8, seed=3, rank=0, world=1, start_step=7)
    it = iter(restarted)
    for step in range(7, 20):
        assert next(it) == full.indices(step)
    # Two ranks together see exactly the single-process global batch.
    r0, r1 = (StreamBatchSampler(50, 8, 3, r, 2) for r in (0, 1))
    assert r0.indices(5) + r1.indices(5) == full.indices(5)
    # Every epoch is a permutation of the data set.
    first_epoch = sum((full.indices(s) for s in range(7)), [])[:50]
    assert sorted(first_epoch) == list(range(50))


@pytest.mark.parametrize("draws", ["rank", "sample"])
def test_sigkill_mid_run_then_resume_is_bit_identical(tmp_path, draws):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    args = [*TINY, "--set", f"train.draws={draws}", "--set", "data.hflip=true"]  # flips: keyed items too
    subprocess.run(dimr_cmd("train", str(ref), *args), check=True, env=env_one_thread(),
                   capture_output=True)
    proc = subprocess.Popen(dimr_cmd("train", str(killed), *args), env=env_one_thread(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list_checkpoints(killed)) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / FINAL_NETWORK).exists()
    resumed = subprocess.run(dimr_cmd("train", str(killed)), env=env_one_thread(), capture_output=True,
                             text=True, check=True)
    assert "resuming" in resumed.stdout
    a, b = final_weights(ref), final_weights(killed)
    assert a["cur_nimg"] == b["cur_nimg"] == 384
    for part in ("model", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs after resume"
    # The log has no repeated steps after the resume.
    steps = [json.loads(line)["step"] for line in (killed / LOG_FILE).read_text().splitlines()]
    assert steps == sorted(set(steps))


def make_run(tmp_path, **train):
    spec = {"preset": "tiny-dimr", "train": {"batch_size": 8, "total_kimg": 0.032, "checkpoint_kimg": 0.016,
                                             "warmup_kimg": 0.0, **train}}
    return tmp_path, write_run_config(tmp_path, resolve_run_config(spec))


def test_resume_with_different_config_names_the_keys(tmp_path):
    run_dir, _ = make_run(tmp_path)
    spec = {"preset": "tiny-dimr", "train": {"batch_size": 8, "total_kimg": 0.032, "checkpoint_kimg": 0.016,
                                             "warmup_kimg": 0.0, "lr": 5e-4}}
    with pytest.raises(ConfigError, match=r"train\.lr"):
        write_run_config(run_dir, resolve_run_config(spec))


def test_corrupted_checkpoint_is_an_error_not_a_restart(tmp_path):
    run_dir, cfg = make_run(tmp_path)
    training_loop(run_dir, cfg, stop_at_kimg=0.016, progress=False)
    (ckpt,) = list_checkpoints(run_dir)
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])  # truncated, as by a full disk
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        training_loop(run_dir, cfg, progress=False)
    assert ckpt.exists(), "the damaged checkpoint must be left for the user to inspect"
    assert not (run_dir / FINAL_NETWORK).exists()


def test_non_finite_loss_stops_with_step_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    from dimr.diffusion import DiffusionObjective

    run_dir, cfg = make_run(tmp_path)
    real_loss = DiffusionObjective.loss
    calls = {"n": 0}

    def exploding(self, *a, **k):
        calls["n"] += 1
        loss, stats = real_loss(self, *a, **k)
        return (loss * float("nan") if calls["n"] > 2 else loss), stats

    monkeypatch.setattr(DiffusionObjective, "loss", exploding)
    with pytest.raises(TrainingDiverged, match="step 2"):
        training_loop(run_dir, cfg, progress=False)
    (ckpt,) = list_checkpoints(run_dir)
    assert ckpt.name.endswith("000000000016.pt")  # step 2 at batch 8 = 16 images: the last good state


def test_sigusr2_saves_and_exits_resumable(tmp_path):
    run_dir = tmp_path / "run"
    args = TINY[:-2] + ["--set", "train.total_kimg=8"]  # long enough to still be running
    proc = subprocess.Popen(dimr_cmd("train", str(run_dir), *args), env=env_one_thread(),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.time() + 120
    while not (run_dir / LOG_FILE).exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR2)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 75, out
    newest = list_checkpoints(run_dir)[-1]
    assert int(newest.stem.split("-")[-1]) > 0


def test_learning_rate_warmup_then_constant_or_cosine():
    from dimr.config import TrainConfig
    from dimr.training.optim import learning_rate

    const = TrainConfig(lr=4e-3, warmup_kimg=1.0, total_kimg=11.0)
    assert learning_rate(const, 500) == pytest.approx(2e-3)      # half-way up the warm-up
    assert learning_rate(const, 11_000) == 4e-3                   # constant to the end
    cos = TrainConfig(lr=4e-3, warmup_kimg=1.0, total_kimg=11.0, lr_decay="cosine")
    assert learning_rate(cos, 500) == pytest.approx(2e-3)         # the same warm-up
    assert learning_rate(cos, 1_000) == pytest.approx(4e-3)       # decay starts after it
    assert learning_rate(cos, 6_000) == pytest.approx(2e-3)       # half-way: cos(π/2) -> lr/2
    assert learning_rate(cos, 11_000) == pytest.approx(0.0, abs=1e-12)
