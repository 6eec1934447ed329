"""Nothing lost, nothing silent: content hashes of every state file, bad inputs named before compute,
consistent logs and temp files across kills, the umask's file modes, byte-identical equal runs."""

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from dimr.errors import CheckpointError, ConfigError
from dimr.run_config import CONFIG_FILE, resolve_run_config, write_run_config
from dimr.training.checkpoint import FINAL_NETWORK, list_checkpoints, load_state
from dimr.training.loop import LOG_FILE, training_loop

BASE = {"preset": "tiny-dimr", "data": {"resolution": 16},
        "train": {"batch_size": 8, "total_kimg": 0.032, "checkpoint_kimg": 0.016, "warmup_kimg": 0.0,
                  "log_kimg": 0.008, "snapshot_kimg": 0.0}}


def dimr(*args, check=False):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "dimr.cli", *args], capture_output=True, text=True, env=env,
                          check=check)


def trained(run_dir: Path, stop_at_kimg=None, **train) -> dict:
    spec = {**BASE, "name": "x", "train": {**BASE["train"], **train}}
    cfg = write_run_config(run_dir, resolve_run_config(spec))
    training_loop(run_dir, cfg, stop_at_kimg=stop_at_kimg, progress=False)
    return cfg


def flip_tensor_bytes(path: Path, entry_index: int = -1):
    """Flip 16 bytes in the middle of a stored tensor (the largest data record) of a torch zip file."""
    with zipfile.ZipFile(path) as zf:
        data = [i for i in zf.infolist() if "/data/" in i.filename]
        info = sorted(data, key=lambda i: i.file_size)[entry_index]
        header = 30 + len(info.filename.encode()) + len(info.extra)  # local file header + name + extra
        offset = info.header_offset + header + info.file_size // 2
    with open(path, "r+b") as f:  # zip's CRC is not checked by torch.load: only a content hash sees this
        f.seek(offset)
        chunk = bytearray(f.read(16))
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in chunk))


def test_a_flipped_tensor_byte_in_a_checkpoint_is_refused_naming_the_file_and_the_previous_one(tmp_path):
    cfg = trained(tmp_path, stop_at_kimg=0.032, total_kimg=0.048)  # two checkpoints, not finished
    first, last = list_checkpoints(tmp_path)[-2:]
    flip_tensor_bytes(last)
    with pytest.raises(CheckpointError, match="damaged") as e:
        training_loop(tmp_path, cfg, progress=False)
    assert str(last) in str(e.value) and str(first) in str(e.value)
    assert last.exists() and not (tmp_path / FINAL_NETWORK).exists()  # nothing deleted, nothing trained


def test_a_flipped_tensor_byte_in_a_network_is_refused_by_train_sample_and_eval(tmp_path):
    trained(tmp_path)
    network = tmp_path / FINAL_NETWORK
    load_state(network, what="network")  # intact: loads
    flip_tensor_bytes(network)
    with pytest.raises(CheckpointError, match="damaged"):
        load_state(network, what="network")
    for cmd in (["train", str(tmp_path)], ["sample", str(tmp_path), "--out", str(tmp_path / "s.npz")]):
        out = dimr(*cmd)
        assert out.returncode == 2 and "is damaged" in out.stderr and "Traceback" not in out.stderr, cmd
    assert network.exists()


def test_identical_runs_write_byte_identical_networks(tmp_path):
    trained(tmp_path / "a")
    trained(tmp_path / "b")
    assert (tmp_path / "a" / FINAL_NETWORK).read_bytes() == (tmp_path / "b" / FINAL_NETWORK).read_bytes()


def test_written_files_get_the_umask_mode_and_no_temp_file_survives_a_restart(tmp_path):
    old = os.umask(0o022)
    try:
        trained(tmp_path, stop_at_kimg=0.016)
    finally:
        os.umask(old)
    assert (tmp_path / CONFIG_FILE).stat().st_mode & 0o777 == 0o644
    assert list_checkpoints(tmp_path)[0].stat().st_mode & 0o777 == 0o644
    stale = [tmp_path / "checkpoints" / ".training-state-000000000032.pt.abc.tmp",
             tmp_path / ".network-final.pt.abc.tmp"]
    for p in stale:  # what a SIGKILL during a write leaves
        p.write_bytes(b"x" * 100)
    trained(tmp_path)
    assert not any(p.exists() for p in stale)


def test_a_run_killed_before_its_first_checkpoint_restarts_its_log_too(tmp_path):
    (tmp_path / LOG_FILE).write_text('{"kimg": 0.008, "step": 1, "loss": 1.0}\n')  # from the killed try
    trained(tmp_path)
    steps = [json.loads(line)["step"] for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[0] == 1 and len(steps) == len(set(steps))


def test_sigint_saves_a_checkpoint_like_sigterm(tmp_path):
    spec = {**BASE, "train": {**BASE["train"], "total_kimg": 50.0, "checkpoint_kimg": 25.0}}
    write_run_config(tmp_path, resolve_run_config(spec))
    proc = subprocess.Popen([sys.executable, "-m", "dimr.cli", "train", str(tmp_path)],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not (tmp_path / LOG_FILE).exists() and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 75, out[-2000:]
    assert list_checkpoints(tmp_path), "SIGINT must save the training state"


def write_samples(path: Path, n=20):
    rng = np.random.default_rng(0)
    np.savez(path, arr_0=rng.integers(0, 255, (n, 16, 16, 1), dtype=np.uint8), labels=np.arange(n) % 10)


@pytest.mark.parametrize("damage", ["truncated", "empty", "text", "flipped"])
def test_a_damaged_samples_file_gets_a_message_not_a_traceback(tmp_path, damage):
    from dimr.metrics.evaluate import read_samples
    from dimr.metrics.fidelity import image_batches

    path = tmp_path / "samples.npz"
    write_samples(path)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "text":
        path.write_text("not an archive\n")
    else:  # image bytes flipped inside arr_0: the zip CRC catches it as the images are read
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo("arr_0.npy")
            offset = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200
        raw = bytearray(data)
        raw[offset:offset + 8] = bytes(b ^ 0xFF for b in raw[offset:offset + 8])
        path.write_bytes(bytes(raw))
    with pytest.raises(ConfigError, match=f"{path}.*damaged"):
        images, *_ = read_samples(path)
        for _ in image_batches(images, 8):
            pass


def test_a_damaged_reference_and_config_get_messages(tmp_path):
    from dimr.metrics.evaluate import evaluate_run
    from dimr.metrics.stats import load_stats

    ref = tmp_path / "ref.npz"
    np.savez(ref, mu=np.zeros(4), sigma=np.eye(4))
    ref.write_bytes(ref.read_bytes()[:50])
    with pytest.raises(ConfigError, match="reference statistics .* damaged"):
        load_stats(ref)
    (tmp_path / CONFIG_FILE).write_text('{"preset": "tiny-dimr", ')
    with pytest.raises(ConfigError, match="not valid JSON"):
        evaluate_run(tmp_path)


@pytest.mark.parametrize("value, key", [(".inf", "train.total_kimg"), (".nan", "train.lr")])
def test_non_finite_numbers_are_refused_before_config_json_is_written(tmp_path, value, key):
    out = dimr("train", str(tmp_path / "r"), "--preset", "tiny-dimr", "--set", f"{key}={value}")
    assert out.returncode == 2 and key in out.stderr and "finite" in out.stderr
    assert not (tmp_path / "r" / CONFIG_FILE).exists()  # the folder stays usable


def test_overrides_on_an_existing_run_are_checked_against_it(tmp_path):
    write_run_config(tmp_path, resolve_run_config({**BASE, "name": "x"}))
    same = dimr("train", str(tmp_path), "--set", "train.batch_size=8", "--stop-at-kimg", "0.008")
    assert same.returncode == 0, same.stderr
    other = dimr("train", str(tmp_path), "--set", "train.batch_size=16")
    assert other.returncode == 2 and "train.batch_size: 8 -> 16" in other.stderr


def test_a_missing_data_folder_is_named_before_config_json_is_written(tmp_path):
    out = dimr("train", str(tmp_path / "r"), "--preset", "tiny-dimr", "--set", "data.root=/nowhere")
    assert out.returncode == 2 and "/nowhere" in out.stderr
    assert not (tmp_path / "r" / CONFIG_FILE).exists()


def test_set_numbers_and_lists_parse_as_yaml_1_2(tmp_path):
    out = dimr("info", "tiny-dimr", "--set", "depths=[3,2,2]", "--json")
    assert out.returncode == 0, out.stderr
    cfg = resolve_run_config({"preset": "tiny-dimr", "train": {"lr": 1e-4}})
    from dimr.config import parse_overrides

    assert parse_overrides(["train.lr=1e-4", "model.depths=[3,2,2]"]) == {
        "train": {"lr": 1e-4}, "model": {"depths": [3, 2, 2]}}
    assert cfg["train"]["lr"] == 1e-4


def test_duplicate_keys_in_a_study_file_are_errors(tmp_path):
    from dimr import studies

    path = tmp_path / "dup.yaml"
    path.write_text("title: t\nscales: {tiny: {base: {recipe: tiny-fmnist}}}\nvariants:\n"
                    "  a: {tiny: {preset: tiny-dimr}}\n  a: {tiny: {preset: tiny-uvit}}\n")
    with pytest.raises(ConfigError, match=r"dup.yaml: line 5: key 'a' is given twice"):
        studies.load_study(path)


def test_the_feature_net_error_names_the_configured_folder(tmp_path):
    from dimr.errors import MissingFileError
    from dimr.metrics.extractors import resolve_weights

    with pytest.raises(MissingFileError, match=f"dimr fidnet {tmp_path / 'nets'}"):
        resolve_weights("fmnist-net", tmp_path / "nets" / "fidnet.pt", "ab" * 32)


def test_a_checkpoint_of_other_training_settings_names_the_keys(tmp_path):
    trained(tmp_path, stop_at_kimg=0.016)
    other = resolve_run_config({**BASE, "name": "x", "train": {**BASE["train"], "lr": 5e-4}})
    with pytest.raises(CheckpointError, match=r"train\.lr"):
        training_loop(tmp_path, other, progress=False)
    kept = torch.load(list_checkpoints(tmp_path)[-1], weights_only=True)
    assert kept["train_config"]["train"]["lr"] != 5e-4


def test_the_latent_recipe_conditions_on_the_official_linear_proxy():
    from dimr.config import RECIPES
    from dimr.diffusion.schedules import build_schedule, c_noise_dimr_latent_proxy

    assert RECIPES["paper-imagenet256"]["diffusion"]["c_noise"] == "dimr-latent-proxy"
    schedule = build_schedule({"type": "ddpm-scaled-linear"})
    t = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    c = c_noise_dimr_latent_proxy(schedule.logsnr(t), schedule)
    # 8n/1000 − 4 with n = 1000 t, over the /4 of every c_noise here: −1 at t = 0, +1 at t = 1
    assert torch.allclose(c, (8 * 1000 * t / 1000 - 4) / 4, atol=1e-6)


def test_a_long_json_spec_is_text_not_a_file_name(tmp_path):
    from dimr.config import load_spec

    spec = {"sample": {"note": "x" * 300, "path": "a/b"}}  # no "/" in the first 255 characters
    assert load_spec(json.dumps(spec)) == spec
    path = tmp_path / "spec.yaml"
    path.write_text("sample: {num_samples: 7}\n")
    assert load_spec(str(path)) == {"sample": {"num_samples": 7}}
    with pytest.raises(ConfigError, match="not a YAML/JSON mapping"):
        load_spec(str(tmp_path / "missing.yaml"))


def test_identities_ignore_fields_at_their_defaults_so_new_fields_do_not_rename_networks():
    from dimr.run_config import eval_identity, train_identity

    cfg = resolve_run_config({"preset": "tiny-dimr"})
    assert cfg["model"]["gelu_approximate"] == "none"  # the field's default: the old behaviour
    older = {**cfg, "model": {k: v for k, v in cfg["model"].items() if k != "gelu_approximate"}}
    assert train_identity(older) == train_identity(cfg)  # a config written before the field existed
    changed = {**cfg, "model": {**cfg["model"], "gelu_approximate": "tanh"}}
    assert train_identity(changed) != train_identity(cfg)
    assert train_identity({**cfg, "seed": 1}) != train_identity(cfg)
    older_eval = {**cfg, "evaluate": {k: v for k, v in cfg["evaluate"].items() if k != "clean_fid_rtol"}}
    assert eval_identity(older_eval) == eval_identity(cfg)
    assert eval_identity({**cfg, "sample": {**cfg["sample"], "num_samples": 7}}) != eval_identity(cfg)


def test_default_free_training_sections_restore_the_whole_config():
    # What the workflow's train rule passes (`dimr train --spec-sections`): without the fields at their
    # dataclass defaults, so that a version adding a field does not change the rule's params.
    from dimr.config import TRAIN_SECTIONS
    from dimr.models import PRESETS
    from dimr.run_config import resolve_run_config, with_defaults, without_defaults

    for preset in [p for p in PRESETS if p.startswith("tiny-")]:
        # an override back to a dataclass default (a preset value) must survive the round trip
        for spec in ({"preset": preset, "recipe": "tiny-fmnist", "seed": 3},
                     {"preset": preset, "recipe": "tiny-fmnist", "model": {"init": "trunc-normal"},
                      "train": {"grad_clip": 1.0, "lr": 3e-4}}):
            cfg = resolve_run_config(spec)
            full = {k: cfg[k] for k in TRAIN_SECTIONS}
            free = without_defaults(cfg, TRAIN_SECTIONS)
            assert with_defaults(free, TRAIN_SECTIONS) == full, preset
            again = resolve_run_config(with_defaults(free, TRAIN_SECTIONS))
            assert {k: again[k] for k in TRAIN_SECTIONS} == full, preset
    # lr 3e-4 is TrainConfig's default and the recipe's is 4e-3: left out, yet restored (not the recipe's)
    assert "lr" not in free["train"] and again["train"]["lr"] == 3e-4
