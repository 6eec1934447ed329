"""The Snakemake DAG: lint, dry runs of every study at both scales, the slurm profile, bad study files."""

import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
STUDIES = sorted(p.stem for p in (REPO / "ablations").glob("*.yaml"))
PER_RUN = ("run_record",)  # jobs of one (variant, seed); its network and evaluations are shared
PER_REFERENCE = ("baseline", "evaluate_baseline")  # jobs of one reference row of a study
REFERENCES = {"tiny": 2, "paper": 1}  # real test images and uniform noise; ImageNet: noise only
PER_STUDY = ("model_info", "aggregate")  # jobs of one study, targets results/<study>.csv


@pytest.fixture
def workdir(tmp_path) -> Path:
    """An empty working directory with the repository's workflow config (studies: the repository's)."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["studies_dir"] = str(REPO / "ablations")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def snakemake(*args, workdir: Path, check=True) -> tuple[subprocess.CompletedProcess, float]:
    """Run snakemake in the repository root on `workdir` (so that `--profile slurm` is looked up there)."""
    t0 = time.perf_counter()
    out = subprocess.run([*SNAKEMAKE, "--directory", str(workdir), *args], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    seconds = time.perf_counter() - t0
    if check and out.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{out.stdout[-3000:]}\n"
                             f"{out.stderr[-3000:]}")
    return out, seconds


def planned_jobs(text: str) -> Counter:
    """{(rule, study or None): count} from a dry run's job listing."""
    counts = Counter()
    blocks = re.split(r"^(?:local)?rule (\w+):$", text, flags=re.M)
    for rule, body in zip(blocks[1::2], blocks[2::2]):
        m = re.search(r"^\s+wildcards:.*\bstudy=([\w-]+)", body.split("\n\n")[0], flags=re.M)
        counts[rule, m.group(1) if m else None] += 1
    return counts


def study_size(study: str, scale: str) -> int:
    """Number of runs (variants × seeds) a study file declares at a scale, under config `max_seeds`."""
    s = yaml.safe_load((REPO / "ablations" / f"{study}.yaml").read_text())
    max_seeds = yaml.safe_load((REPO / "config" / "config.yaml").read_text()).get("max_seeds")
    return len(s["variants"]) * len(s["scales"][scale].get("seeds", [0])[:max_seeds])


# The lints Snakemake 9 still prints, each a deliberate choice:
# - per-rule conda environments: jobs run with the interpreter that runs Snakemake (the launcher ships
#   it to SLURM nodes through submitit), so a per-rule environment would not apply;
# - LAUNCHER and DIMR (interpreter, submit.py, dispatch) in the shell text rather than params: params
#   and the shell text are provenance (rerun triggers), and placement must never rerun a job.
ALLOWED_LINTS = {
    "Specify a conda environment or container for each rule.:",
    "Shell command directly uses variable LAUNCHER from outside of the rule:",
    "Shell command directly uses variable DIMR from outside of the rule:",
}


def test_lint_leaves_only_deliberate_choices(workdir):
    out, _ = snakemake("--lint", workdir=workdir, check=False)
    lints = re.findall(r"^\s+\* (.+)$", out.stdout + out.stderr, flags=re.M)
    assert lints, "snakemake --lint printed no lint at all: did it run?"
    assert set(lints) <= ALLOWED_LINTS, set(lints) - ALLOWED_LINTS


def distinct_trainings(scale: str) -> tuple[int, int]:
    """(runs, distinct training specs) of every study at `scale`: runs whose specs agree outside the sample
    and evaluate sections train one network (computed from the study files, without dimr); a two-stage
    run's stage-1 network is one more training spec."""
    import json

    from dimr import studies as study_files

    max_seeds = yaml.safe_load((REPO / "config" / "config.yaml").read_text()).get("max_seeds")
    runs, specs = 0, set()
    for name in STUDIES:
        study = study_files.load_study(REPO / "ablations" / f"{name}.yaml")
        for run in study_files.runs_of(study, scale, max_seeds):
            spec = study_files.run_spec(study, run, {})
            runs += 1
            specs.add(json.dumps({k: v for k, v in spec.items() if k not in ("name", "sample", "evaluate")},
                                 sort_keys=True))
            stage1 = study_files.stage1_spec(study, run, {})
            if stage1 is not None:
                specs.add(json.dumps({k: v for k, v in stage1.items() if k != "name"}, sort_keys=True))
    return runs, len(specs)


def evaluations_per_run(study: str, scale: str) -> int:
    s = yaml.safe_load((REPO / "ablations" / f"{study}.yaml").read_text())
    body = s["scales"][scale]
    points = 1
    for values in body.get("sweep", {}).values():
        points *= len(values)
    sweep = points if body.get("sweep") else 0
    return 1 + sweep * (2 if body.get("select") else 1)


@pytest.mark.parametrize("scale", ["tiny", "paper"])
def test_dry_run_plans_one_train_job_per_distinct_training(scale, workdir):
    targets = [f"results/{s}.csv" for s in STUDIES]
    out, seconds = snakemake("-n", *targets, "--config", f"scale={scale}", workdir=workdir)
    jobs = planned_jobs(out.stdout)
    for study in STUDIES:
        runs = study_size(study, scale)
        assert runs > 0
        for rule in PER_RUN:
            assert jobs[rule, study] == runs, (rule, study, scale)
        for rule in PER_STUDY:
            assert jobs[rule, study] == 1, (rule, study, scale)
        for rule in PER_REFERENCE:
            assert jobs[rule, study] == REFERENCES[scale], (rule, study, scale)
    runs, distinct = distinct_trainings(scale)
    # resolution can only merge specs further (a default stated explicitly is the default)
    assert jobs["train", None] <= distinct < runs, (jobs["train", None], distinct, runs)
    # evaluations are per (network, sample + evaluate sections): shared runs share them too
    planned = sum(study_size(s, scale) * evaluations_per_run(s, scale) for s in STUDIES)
    assert jobs["evaluate", None] <= planned
    assert jobs["curve", None] <= distinct
    prepared = 1 if scale == "tiny" else 0
    assert jobs["fidnet", None] == prepared and jobs["reference", None] == prepared
    print(f"\nsnakemake -n, all {len(STUDIES)} studies at {scale} scale: {runs} runs, {distinct} distinct "
          f"trainings, {jobs['train', None]} train jobs, {jobs['evaluate', None]} evaluate jobs, "
          f"{sum(jobs.values())} jobs in {seconds:.1f} s")
    assert seconds < 60


def test_a_study_of_networks_another_study_trains_plans_no_train_job_of_its_own(workdir):
    # the sampling sweep reads table1's U-ViT and DiMR networks: with table1 planned it adds none
    out, _ = snakemake("-n", "results/table1.csv", workdir=workdir)
    alone = planned_jobs(out.stdout)["train", None]
    out, _ = snakemake("-n", "results/table1.csv", "results/sampling.csv", workdir=workdir)
    both = planned_jobs(out.stdout)
    assert both["train", None] == alone == 12
    assert both["run_record", "sampling"] == study_size("sampling", "tiny")


def test_default_target_and_table1_dry_run_answer_in_seconds(workdir):
    out, seconds = snakemake("-n", "results/table1.csv", workdir=workdir)
    jobs = planned_jobs(out.stdout)
    assert jobs["run_record", "table1"] == study_size("table1", "tiny") == 12  # 6 rows × 2 of 3 seeds
    assert jobs["train", None] == 12  # table1's rows all train different networks
    print(f"\nsnakemake -n results/table1.csv: {sum(jobs.values())} jobs in {seconds:.1f} s")
    assert seconds < 30
    out, _ = snakemake("-n", workdir=workdir)  # rule all: tables and figures of config `studies` (table1)
    jobs = planned_jobs(out.stdout)
    assert jobs["tables", "table1"] == jobs["figures", "table1"] == 1


def test_slurm_profile_is_found_in_the_repository_root_and_survives_config_on_the_command_line(workdir):
    out, _ = snakemake("--profile", "slurm", "-n", "-p", "results/table1.csv", "--config", "max_seeds=1",
                       workdir=workdir)
    train = [ln for ln in out.stdout.splitlines() if "dimr.cli train" in ln]
    assert len(train) == study_size("table1", "paper") == 6
    # config/slurm.yaml (the profile's configfile) sets dispatch and scale; --config did not drop them.
    assert all("--executor slurm" in ln and '"recipe": "paper-imagenet64"' in ln for ln in train)
    assert all("--gpus-per-node 8" in ln and "--timeout-min 1440" in ln for ln in train)  # profile resources


def write_study(tmp_path, text: str) -> Path:
    (tmp_path / "studies").mkdir()
    path = tmp_path / "studies" / "bad.yaml"
    path.write_text(text)
    return path


GOOD = """
title: t
scales:
  tiny:
    seeds: [0]
    base: {recipe: tiny-fmnist, preset: tiny-uvit}
variants:
  a: {label: A}
"""


@pytest.mark.parametrize("change, key, hint", [
    # unknown key in a variant (schema)
    (("a: {label: A}", "a: {label: A, presett: tiny-uvit}"), "variants.a.presett", "valid keys here"),
    # wrong type (schema)
    (("seeds: [0]", "seeds: zero"), "scales.tiny.seeds", "is not of type 'array'"),
    # unknown preset (dimr.models via resolve_run_config)
    (("a: {label: A}", "a: {label: A, spec: {preset: tiny-nope}}"), "variants.a.spec", "tiny-dimr"),
    # patch size that does not divide the resolution (32)
    (("a: {label: A}", "a: {label: A, spec: {model: {patch_size: 5}}}"), "variants.a.spec", "divide 16"),
    # unknown key inside a section (dimr.config via the owning package)
    (("a: {label: A}", "a: {label: A, tiny: {train: {lr_typo: 1}}}"), "variants.a.tiny", "valid keys"),
])
def test_bad_study_file_stops_the_workflow_naming_file_and_key(workdir, change, key, hint):
    path = write_study(workdir, GOOD.replace(*change))
    out, _ = snakemake("-n", "--config", f"studies_dir={path.parent}", "studies=[bad]", workdir=workdir,
                       check=False)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert str(path) in text and key in text and hint in text, text[-2000:]
    assert "rule train" not in text


def test_good_micro_study_plans(workdir):
    path = write_study(workdir, GOOD)
    out, _ = snakemake("-n", "--config", f"studies_dir={path.parent}", "studies=[bad]", workdir=workdir)
    jobs = planned_jobs(out.stdout)
    assert jobs["train", None] == jobs["run_record", "bad"] == 1
