"""The slurm profile's and the command line's traps, in dry runs (no cluster needed): one resource key
changed on the command line keeps the others; a --configfile that drops the profile's config/slurm.yaml
is an error, not a silent local run; nested --config values and null are read as YAML."""

import subprocess
import sys

from test_workflow_e2e import REPO, micro_workdir


def dry_run(workdir, *extra) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--profile", "slurm", "--directory", str(workdir), "-n",
           "--cores", "2", *extra]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=170)


def shell_lines(out: str, stage: str) -> list[str]:
    return [ln for ln in out.splitlines() if "submit.py" in ln and f"/job-{stage}.json" in ln]


def test_one_resource_key_on_the_command_line_keeps_the_rest(tmp_path):
    res = dry_run(micro_workdir(tmp_path), "--config", "scale=tiny", "--set-resources", "train:runtime=33")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (train,) = shell_lines(res.stdout, "train")
    assert "--executor slurm" in train and "--timeout-min 33" in train
    # the rest of train's placement from config/slurm.yaml, not the rule's defaults
    assert "--gpus-per-node 8" in train and "--cpus-per-task 8" in train and "256000" in train
    (fidnet,) = shell_lines(res.stdout, "fidnet")
    assert "--timeout-min 60" in fidnet and "--cpus-per-task 4" in fidnet


def test_configfile_that_drops_the_profiles_dispatch_is_an_error(tmp_path):
    workdir = micro_workdir(tmp_path)
    res = dry_run(workdir, "--configfile", str(workdir / "config" / "config.yaml"), "--config", "scale=tiny")
    assert res.returncode != 0
    assert "dispatch is local" in res.stdout + res.stderr and "config/slurm.yaml" in res.stdout + res.stderr


def test_config_on_the_command_line_is_read_as_yaml(tmp_path):
    # Snakemake hands nested --config values and `null` over as strings; the schema would refuse them.
    cmd = [sys.executable, "-m", "snakemake", "--directory", str(micro_workdir(tmp_path)), "-n", "-p",
           "--cores", "1", "--config", "max_seeds=null", "fidnet={epochs: 2, num_train: 100}"]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=170)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (fidnet,) = [ln for ln in res.stdout.splitlines() if "dimr.cli fidnet" in ln and "submit.py" in ln]
    assert "--epochs 2" in fidnet and "--num-train 100" in fidnet
