"""`dimr estimate`: GPU-hours from benchmark results, for presets and for study files."""

import argparse
import json

import pytest
import torch

from dimr import estimate, perf
from dimr.config import RECIPES
from dimr.errors import MissingFileError
from dimr.models import resolve_model_config
from dimr.models.counting import count_gmacs

TRAIN_IMG_S, S_PER_EVAL, EXTRACT_IMG_S = 100.0, 1e-3, 1000.0
TINY = RECIPES["tiny-fmnist"]


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp-2m", "heun"])
def test_network_evaluations_match_the_samplers(sampler):
    from dimr.diffusion import SAMPLERS, build_schedule, get_logsnrs

    calls = []

    def denoise(z, lam):
        calls.append(lam)
        return torch.zeros_like(z)

    SAMPLERS[sampler](denoise, torch.randn(1, 1, 2, 2), get_logsnrs(build_schedule({"type": "cosine"}), 7))
    assert len(calls) == estimate.network_evaluations(sampler, 7)


@pytest.fixture(scope="module")
def bench_file(tmp_path_factory):
    """A benchmark JSON that measured tiny-dimr only: 100 img/s training, 1 ms per image-evaluation."""
    cfg = resolve_model_config("tiny-dimr", {"resolution": TINY["data"]["resolution"]})  # as benchmarked
    path = tmp_path_factory.mktemp("bench") / "cpu-2t-abc-1.json"
    gflops = perf.train_flops_per_image(cfg) / 1e9
    rows = [
        {"kind": "train", "preset": "tiny-dimr", "compiled": False, "images_per_s": TRAIN_IMG_S,
         "train_gflops_per_image": gflops},
        {"kind": "train", "preset": "tiny-dimr", "compiled": True, "images_per_s": 4 * TRAIN_IMG_S,
         "train_gflops_per_image": gflops},
        {"kind": "sample", "preset": "tiny-dimr", "s_per_image_eval": S_PER_EVAL, "gmacs": count_gmacs(cfg)},
        {"kind": "extract", "extractor": "fmnist-net", "images_per_s": EXTRACT_IMG_S},
    ]
    benchmarks = [{"name": str(i), "extra_info": r} for i, r in enumerate(rows)]
    path.write_text(json.dumps({"machine_info": {"dimr": {"machine": "cpu-2t", "device": "cpu"}},
                                "benchmarks": benchmarks}))
    return path


def test_measured_preset_costs_images_over_throughput(bench_file):
    est = estimate.Estimator(estimate.Throughput.load(bench_file))
    c = est.cost({"preset": "tiny-dimr", "recipe": "tiny-fmnist", "train": {"total_kimg": 36.0}})
    assert c.basis == "measured"
    assert c.train_h == pytest.approx(36_000 / TRAIN_IMG_S / 3600)
    # tiny-fmnist: N images with dpmpp-2m (one step, one evaluation), guided: each evaluation runs the
    # conditional and the unconditional batch, twice the time; fmnist-net features.
    n, steps = TINY["sample"]["num_samples"], TINY["sample"]["sampler"]["steps"]
    assert TINY["sample"]["sampler"]["guidance"]["scale"] > 0
    assert c.nfe == steps
    assert c.sample_h == pytest.approx(n * 2 * steps * S_PER_EVAL / 3600)
    assert c.eval_h == pytest.approx(n / EXTRACT_IMG_S / 3600)
    assert c.total_h == pytest.approx(c.train_h + c.sample_h + c.eval_h)
    compiled = estimate.Estimator(estimate.Throughput.load(bench_file, compiled=True))
    fast = compiled.cost({"preset": "tiny-dimr", "train": {"total_kimg": 36.0}})
    assert fast.train_h == pytest.approx(c.train_h / 4)


def test_guidance_doubles_sampling_and_heun_costs_more_evaluations(bench_file):
    est = estimate.Estimator(estimate.Throughput.load(bench_file))
    sampler = {"sampler": "heun", "steps": 10, "guidance": {"scale": 0.4}}
    c = est.cost({"preset": "tiny-dimr", "sample": {"num_samples": 100, "sampler": sampler}})
    assert c.nfe == 19 and c.sample_h == pytest.approx(100 * 19 * 2 * S_PER_EVAL / 3600)


def test_unmeasured_and_overridden_models_scale_by_flops(bench_file):
    tp = estimate.Throughput.load(bench_file)
    est = estimate.Estimator(tp)
    side = {"resolution": TINY["data"]["resolution"]}  # the recipe's input, as the runs see it
    dimr_flops = est.flops(resolve_model_config("tiny-dimr", side))[0]  # perf.train_flops_per_image
    uvit = est.cost({"preset": "tiny-uvit", "train": {"total_kimg": 10.0}})
    uvit_flops = est.flops(resolve_model_config("tiny-uvit", side))[0]
    assert uvit.basis == "median TFLOP/s"
    assert uvit.train_h == pytest.approx(10_000 * uvit_flops / (TRAIN_IMG_S * dimr_flops) / 3600)
    deeper = est.cost({"preset": "tiny-dimr", "model": {"depths": [9, 2, 2]}, "train": {"total_kimg": 10.0}})
    assert deeper.basis == "preset's TFLOP/s"
    assert deeper.train_h > 10_000 / TRAIN_IMG_S / 3600


def test_paper_recipe_without_its_data_set_uses_the_preset_shape(bench_file):
    est = estimate.Estimator(estimate.Throughput.load(bench_file))
    c = est.cost({"preset": "uvit-m-4", "recipe": "paper-imagenet64"})  # no ImageNet folder here
    assert c.kimg == 307200.0 and c.num_samples == 50000 and c.nfe == 50
    assert c.train_h > 0 and c.eval_h == 0.0  # Inception was not benchmarked


def write_study(path):
    path.write_text("""
title: two rows
scales:
  tiny:
    seeds: [0, 1]
    base: {recipe: tiny-fmnist, train: {total_kimg: 3.6}, sample: {num_samples: 100}}
variants:
  small: {tiny: {preset: tiny-dimr}}
  large: {tiny: {preset: tiny-dimr, train: {total_kimg: 7.2}}}
""")


def test_study_costs_every_run_and_sums_per_study(bench_file, tmp_path):
    study = tmp_path / "two.yaml"
    write_study(study)
    est = estimate.Estimator(estimate.Throughput.load(bench_file))
    costs = estimate.study_costs(est, study, "tiny")
    assert [(c.variant, c.seed) for c in costs] == [("small", 0), ("small", 1), ("large", 0), ("large", 1)]
    assert costs[2].train_h == pytest.approx(2 * costs[0].train_h)
    totals = estimate.summarize(costs)
    assert totals["two"]["runs"] == 4
    assert totals["all"]["total_h"] == pytest.approx(sum(c.total_h for c in costs))
    assert len(estimate.study_costs(est, study, "tiny", max_seeds=1)) == 2


def run_cli(argv):
    p = argparse.ArgumentParser()
    estimate.add_arguments(p)
    return estimate.run(p.parse_args(argv))


def test_command_prints_a_table_and_json(bench_file, tmp_path, capsys):
    study = tmp_path / "two.yaml"
    write_study(study)
    assert run_cli([str(study), "--scale", "tiny", "--bench", str(bench_file)]) == 0
    out = capsys.readouterr().out
    assert "CPU-hours on cpu-2t" in out and "TOTAL" in out and out.count("tiny-dimr") == 4
    run_cli(["--preset", "tiny-dimr", "--kimg", "36", "--bench", str(bench_file), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert data["runs"][0]["train_h"] == pytest.approx(0.1) and data["studies"]["all"]["runs"] == 1


def test_missing_benchmarks_name_the_fix(tmp_path):
    with pytest.raises(MissingFileError, match="make bench"):
        estimate.newest_benchmark(tmp_path)


def test_dry_run_table_costs_resolved_configs(bench_file, tmp_path):
    from dimr.run_config import resolve_run_config

    cfg = resolve_run_config({"preset": "tiny-dimr", "recipe": "tiny-fmnist", "train": {"total_kimg": 36.0}})
    table = estimate.dry_run_table({("table1", "glu", 0): cfg}, bench_file)
    row = next(line for line in table.splitlines() if line.startswith("table1 ") and "glu" in line)
    assert row.split()[5] == "0.100" and "measured" in row  # train hours: 36 kimg at 100 img/s
    assert estimate.dry_run_table({}, tmp_path / "none.json").startswith("compute estimate unavailable")


def test_memory_plan_places_training_and_counts_time_limit_requeues(bench_file):
    tp = estimate.Throughput.load(bench_file)
    spec = {"preset": "dimr-xl-2r", "recipe": "paper-imagenet256"}  # global batch 1024, no latents here
    official = estimate.Estimator(tp, estimate.Placement(gpus=16, gpu_gib=80, time_limit_min=1440)).cost(spec)
    assert (official.gpus, official.batch_gpu, official.checkpoint_blocks) == (16, 64, 0)
    # On 40-GiB GPUs 64 images do not fit without checkpointing: every block is, and the step recomputes
    # its forward pass (3 passes of work become 4).
    small = estimate.Estimator(tp, estimate.Placement(gpus=16, gpu_gib=40, time_limit_min=1440)).cost(spec)
    assert small.checkpoint_blocks == 1 and small.batch_gpu == 64
    assert small.train_h == pytest.approx(official.train_h * 4 / 3)
    # Requeues: the wall time over the job's GPUs, in time limits, less the first submission.
    for c, limit in ((official, 1440), (small, 1440)):
        assert c.requeues == max(0, -(-c.train_h / 16 * 60 // limit) - 1)
    short = estimate.Estimator(tp, estimate.Placement(gpus=16, gpu_gib=80, time_limit_min=60)).cost(spec)
    assert short.requeues > official.requeues
