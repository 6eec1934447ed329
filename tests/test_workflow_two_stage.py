"""Two-stage rows in the workflow: planning trains each declared stage 1 (shared with equal networks of other
studies), makes it an input of the stage-2 evaluations, and stops on a bad declaration; the relay and
resolution studies plan at both scales."""

import re

import pytest
import yaml
from test_workflow_dag import REPO, planned_jobs, snakemake, study_size, write_study

from dimr import studies as study_files
from dimr.run_config import resolve_run_config, train_identity

TWO_STAGE = ("cascade", "relay", "relay-no-block-noise")  # the relay study's rows that declare stage1


@pytest.fixture
def workdir(tmp_path):
    """An empty working directory with the repository's workflow config (studies: the repository's)."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["studies_dir"] = str(REPO / "ablations")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def job_blocks(text: str) -> list[tuple[str, str]]:
    """[(rule, body)] of a dry run's job listing."""
    blocks = re.split(r"^(?:local)?rule (\w+):$", text, flags=re.M)
    return list(zip(blocks[1::2], (b.split("\n\n")[0] for b in blocks[2::2])))


def field(body: str, name: str) -> list[str]:
    m = re.search(rf"^\s+{name}: (.+)$", body, flags=re.M)
    return [s.strip() for s in m.group(1).split(",")] if m else []


def networks_read(body: str) -> set[str]:
    """The network files a job reads (two for a two-stage evaluation)."""
    return {i for i in field(body, "input") if i.endswith("network-final.pt")}


def network_of(study: str, variant: str, seed: int) -> str:
    """The folder name planning gives a single-stage run's network (preset + training hash)."""
    s = study_files.load_study(REPO / "ablations" / f"{study}.yaml")
    cfg = resolve_run_config(study_files.run_spec(s, study_files.Run(study, "tiny", variant, seed), {}))
    return f"{cfg['preset']}-{train_identity(cfg)[:12]}"


def plan_both(workdir, scale: str, pre=(), post=()):
    """Dry-run the relay and resolution studies (arguments `pre` before the targets, `post` after them):
    (jobs, blocks, trained networks, seconds), with one run record per run of each study checked."""
    targets = ("results/relay.csv", "results/resolution.csv")
    out, seconds = snakemake("-n", *pre, *targets, *post, workdir=workdir)
    jobs, blocks = planned_jobs(out.stdout), job_blocks(out.stdout)
    for study in ("relay", "resolution"):
        assert jobs["run_record", study] == study_size(study, scale)
    trained = {f for rule, body in blocks if rule == "train" for f in field(body, "output")
               if f.endswith("network-final.pt")}
    return jobs, blocks, trained, seconds


def test_relay_and_resolution_plan_at_tiny_scale_with_stage1_shared_with_table1(workdir):
    jobs, blocks, trained, seconds = plan_both(workdir, "tiny", pre=("-p", "results/table1.csv"))
    seeds = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["max_seeds"]
    for seed in range(seeds):
        # the 16-px stage 1 of every two-stage row is table1's tiny-dimr "+ GLU" network of that seed
        stage1 = f"runs/networks/{network_of('table1', 'glu', seed)}/network-final.pt"
        assert stage1 in trained
        # one main evaluation per two-stage row of the seed, each of a 32-px stage-2 network of its own
        # (table1's own evaluation of the stage-1 network reads one network file)
        evaluations = [body for rule, body in blocks if rule == "evaluate" and stage1 in field(body, "input")
                       and len(networks_read(body)) == 2]
        assert len(evaluations) == len(TWO_STAGE), evaluations
        stage2 = {i for body in evaluations for i in networks_read(body)}
        assert len(stage2 - {stage1}) == len(TWO_STAGE) and stage2 - {stage1} <= trained
        for body in evaluations:  # scored with the 32-px feature net and statistics, sampled from stage 1
            assert {"work/fidnet-32px/fidnet.pt", "work/reference/fashion-mnist-32px-train.npz"} <= set(
                field(body, "input"))
            assert f'"network": "{stage1.split("/")[2]}"' in body
    # one train job per network: the stage 1 is not trained twice (table1 trains it already)
    assert len(trained) == jobs["train", None]
    assert jobs["fidnet_at_side", None] == 2  # 32 px (relay) and 64 px upsampled 2x (resolution)
    assert jobs["reference_at_side", None] == 2
    print(f"\nsnakemake -n relay + resolution + table1 (tiny): {sum(jobs.values())} jobs, "
          f"{jobs['train', None]} train, {jobs['evaluate', None]} evaluate, in {seconds:.1f} s")


def test_relay_and_resolution_plan_at_paper_scale(workdir):
    jobs, blocks, trained, seconds = plan_both(workdir, "paper", post=("--config", "scale=paper"))
    two_stage = [body for rule, body in blocks if rule == "evaluate" and len(networks_read(body)) == 2]
    assert len(two_stage) == len(TWO_STAGE)  # one seed at the paper scale
    for body in two_stage:  # both networks of the row are trained by this plan
        assert networks_read(body) <= trained
    print(f"\nsnakemake -n relay + resolution (paper): {sum(jobs.values())} jobs, {jobs['train', None]} "
          f"train, {jobs['evaluate', None]} evaluate, in {seconds:.1f} s")


TWO_STAGE_STUDY = """
title: t
scales:
  tiny:
    seeds: [0]
    base: {recipe: tiny-fmnist, preset: tiny-uvit, data: {resolution: 32}}
variants:
  r:
    stage1: {spec: {data: {resolution: 16}}}
    spec: {diffusion: {process: {type: relay-blur, patch: 2}, prediction: eps, loss: {weighting: uniform}}}
"""


@pytest.mark.parametrize("change, hint", [
    # a stage 1 of the wrong side: the relay network (patch 2 at 32 px) starts from 16-px images
    (("stage1: {spec: {data: {resolution: 16}}}", "stage1: {spec: {data: {resolution: 32}}}"),
     "set variants.r.stage1 data.resolution to 16"),
    # a stage-2 network without a stage 1
    (("    stage1: {spec: {data: {resolution: 16}}}\n", ""), "declare it as `variants.r.stage1"),
])
def test_bad_stage1_declaration_stops_planning_naming_the_variant_and_the_fix(workdir, change, hint):
    path = write_study(workdir, TWO_STAGE_STUDY.replace(*change))
    out, _ = snakemake("-n", "--config", f"studies_dir={path.parent}", "studies=[bad]", workdir=workdir,
                       check=False)
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "rule train" not in text
    assert str(path) in text and "variant 'r'" in text and hint in text, text[-2000:]


def test_good_two_stage_micro_study_plans_its_stage1(workdir):
    path = write_study(workdir, TWO_STAGE_STUDY)
    out, _ = snakemake("-n", "--config", f"studies_dir={path.parent}", "studies=[bad]", workdir=workdir)
    jobs = planned_jobs(out.stdout)
    assert jobs["train", None] == 2 and jobs["run_record", "bad"] == 1  # stage 1 and the relay network
