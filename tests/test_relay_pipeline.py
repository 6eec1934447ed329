"""Two-stage rows end to end on the CPU: a 16-px stage 1, a 32-px cascade super-resolution network (Ho et al.
2022, §3) and a 32-px relay-blur network (Teng et al. 2023), trained for 2 steps on Fashion-MNIST, then
`dimr eval` of each stage-2 network from the stage-1 network's samples of the same seeds.
"""

import argparse
import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dimr.diffusion import (
    CascadeObjective,
    ConcatCondition,
    RelaySamplerConfig,
    SamplerConfig,
    build_objective,
    relay_sigmas,
    upsample_nearest,
)
from dimr.diffusion.blurring import RelayProcess
from dimr.errors import ConfigError, MissingFileError
from dimr.metrics import fidnet, network_eval
from dimr.metrics.fidelity import Extractor
from dimr.metrics.reference import make_reference, reference_images
from dimr.models import build_model, resolve_model_config
from dimr.run_config import eval_identity, resolve_eval_config, resolve_run_config, train_identity
from dimr.run_config import write_run_config as write_config
from dimr.sampling.generate import from_uint8, generate_images, generate_two_stage, stage_seed
from dimr.sampling.two_stage import load_stage1
from dimr.training.checkpoint import FINAL_NETWORK
from dimr.training.loop import training_loop

TRAIN = {"batch_size": 8, "total_kimg": 0.016, "checkpoint_kimg": 0.016, "warmup_kimg": 0.0}  # 2 steps
RELAY_DIFFUSION = {"process": {"type": "relay-blur", "patch": 2}, "prediction": "eps",
                   "loss": {"weighting": "uniform"}}
CASCADE_DIFFUSION = {"condition": {"type": "low-resolution", "resolution": 16, "augment_sigma_max": 0.2}}
# Unguided, so that each NFE is its step count (the tiny recipe's own sampler is guided).
UNGUIDED = {"guidance": {"scale": 0.0}}
STAGE1_SAMPLER, CASCADE_SAMPLER = {"steps": 4, **UNGUIDED}, {"steps": 3, **UNGUIDED}
RELAY_SAMPLER = {"steps": 10}
N = 4


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    """{stage1, cascade, relay, root, evaluate}: three trained network folders side by side (as in
    runs/networks/), and an evaluate section with a 32-px fmnist-net and its reference statistics."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("networks")
    specs = {"stage1": {"preset": "tiny-uvit"},
             "cascade": {"preset": "tiny-dimr", "data": {"resolution": 32}, "diffusion": CASCADE_DIFFUSION},
             "relay": {"preset": "tiny-uvit", "data": {"resolution": 32}, "diffusion": RELAY_DIFFUSION}}
    out = {"root": root}
    for name, spec in specs.items():
        cfg = write_config(root / name, resolve_run_config({**spec, "recipe": "tiny-fmnist", "train": TRAIN}))
        training_loop(root / name, cfg, progress=False)
        out[name] = root / name
    feat = tmp_path_factory.mktemp("fidnet")
    fidnet.train_fidnet(feat, epochs=1, seed=0, num_train=512, num_test=100, resolution=32,
                        log=lambda *_: None)
    extractor = Extractor("fmnist-net", feat / fidnet.WEIGHTS_FILE, device="cpu")
    src, meta = reference_images("fashion-mnist", "train", num=200, resolution=32)
    make_reference(feat / "ref.npz", extractor, src, meta, num_pr=0)
    out["evaluate"] = {"extractor_weights": str(feat / fidnet.WEIGHTS_FILE),
                       "reference": str(feat / "ref.npz"), "metrics": ["fid"], "fid_bootstrap": 0,
                       "clean_fid": False}
    yield out
    torch.set_num_threads(threads)


def eval_config(net_dir, stage1="stage1", evaluate=None, **sample):
    """A two-stage evaluation of `net_dir` (resolved as `dimr eval` does) from the sibling `stage1`."""
    s = {"num_samples": N, "grid": N, "npz": True, "sampler": CASCADE_SAMPLER,
         "stage1": {"network": stage1, "sampler": STAGE1_SAMPLER} if stage1 else {}, **sample}
    net_cfg = network_eval.load_run_config(net_dir)
    if net_cfg["diffusion"]["process"]["type"] == "relay-blur":
        s["relay"] = RELAY_SAMPLER
    return resolve_eval_config(net_cfg, {"sample": s, "evaluate": evaluate or {}})


def evaluate(nets, name, out, batch, **kw):
    ev = eval_config(nets[name], evaluate=nets["evaluate"], **kw)
    eval_dir, result = network_eval.evaluate_network(nets[name], ev, out, batch=batch)
    record = json.loads((eval_dir / "eval.json").read_text())
    return np.load(eval_dir / "samples.npz")["arr_0"], result, record


# ----------------------------------------------------------------------------
# Identities: nothing existing changes.


def test_new_fields_leave_existing_identities_unchanged():
    cfg = resolve_run_config({"preset": "tiny-dimr", "recipe": "tiny-fmnist", "seed": 0})
    assert cfg["diffusion"]["condition"] == {"type": "none"} and cfg["model"]["cond_channels"] == 0
    assert cfg["sample"]["stage1"] == {} and cfg["sample"]["relay"] == {}
    # At their defaults the new fields are left out of both identities: a config written before they
    # existed (without them) names the same network and evaluation.
    old = json.loads(json.dumps(cfg))
    del old["diffusion"]["condition"], old["model"]["cond_channels"]
    del old["sample"]["stage1"], old["sample"]["relay"]
    assert train_identity(cfg) == train_identity(old) and eval_identity(cfg) == eval_identity(old)
    # Pinned: the tiny recipe of commit b2e5cea (sin-cos positions, guided sampling). Recompute only when
    # the recipe or the preset changes on purpose (that renames every tiny network).
    assert train_identity(cfg) == "1e25560988808dfc6dc1d596c4e62826ca1089ce34e28bf21142e255afe6a2c5"
    assert eval_identity(cfg) == "841e1bbc18fe68d9d2da7861df13d34c04783d57ffd953810820aa541ad9f4d3"
    cascade = resolve_run_config({"preset": "tiny-dimr", "data": {"resolution": 32},
                                  "diffusion": CASCADE_DIFFUSION})
    assert cascade["model"]["cond_channels"] == 1 and cascade["model"]["in_channels"] == 1
    assert train_identity(cascade) != train_identity(resolve_run_config({"preset": "tiny-dimr",
                                                                         "data": {"resolution": 32}}))


def test_config_errors_name_the_fix():
    with pytest.raises(ConfigError, match="must divide data.resolution 32"):
        resolve_run_config({"preset": "tiny-dimr", "data": {"resolution": 32},
                            "diffusion": {"condition": {"type": "low-resolution", "resolution": 12}}})
    with pytest.raises(ConfigError, match="set condition: none"):
        resolve_run_config({"preset": "tiny-uvit", "diffusion": {**RELAY_DIFFUSION, **CASCADE_DIFFUSION}})
    with pytest.raises(ConfigError, match="relay-blur networks only"):
        resolve_run_config({"preset": "tiny-uvit", "sample": {"relay": {"steps": 10}}})
    with pytest.raises(ConfigError, match=r"sample\.stage1\.network: name the stage-1"):
        resolve_run_config({"preset": "tiny-uvit", "sample": {"stage1": {"sampler": {"steps": 4}}}})


# ----------------------------------------------------------------------------
# Units: what the cascade network sees in training; where the relay sampler starts.


def test_cascade_network_sees_the_upsampled_area_downsampled_batch(one_thread):
    seen = []

    def model(x, c_noise, y):
        seen.append(x)
        return [x[:, :1]]

    x = torch.rand(3, 1, 32, 32) * 2 - 1
    obj = build_objective({"condition": {"type": "low-resolution", "resolution": 16}})
    assert isinstance(obj, CascadeObjective)
    obj.loss(model, x, torch.zeros(3, dtype=torch.long), torch.Generator().manual_seed(0))
    assert seen[0].shape == (3, 2, 32, 32)
    torch.testing.assert_close(seen[0][:, 1:], upsample_nearest(F.avg_pool2d(x, 2), 2))
    # guidance passes [conditional; unconditional]: the one conditioning image is repeated
    ConcatCondition(model, seen[0][:, 1:])(torch.zeros(6, 1, 32, 32), torch.zeros(6), None)
    torch.testing.assert_close(seen[-1][3:, 1:], seen[0][:, 1:])
    for preset in ("tiny-uvit", "tiny-dimr"):  # both families take C + C channels in, give C out
        net = build_model(resolve_model_config(preset, {"in_channels": 1, "cond_channels": 1,
                                                        "resolution": 32, "num_classes": 10}))
        out = net(torch.zeros(2, 2, 32, 32), torch.zeros(2), torch.zeros(2, dtype=torch.long))[-1]
        assert out.shape[1] == (2 if net.cfg.learn_sigma else 1)  # learned variance: 2C, the first C used


def test_relay_sampler_starts_from_the_nearest_upsampled_stage1_image(nets, one_thread):
    first = []

    class Stub:  # records the stage-2 network's first input
        num_classes = 10

        def __call__(self, x, c_noise, y):
            if not first:
                first.append((x.clone(), c_noise.clone()))
            return [torch.zeros(x.shape[0], 1, *x.shape[-2:])]

    cfg = network_eval.run_config(network_eval.load_run_config(nets["relay"]), eval_config(nets["relay"]))
    stage1 = load_stage1(nets["relay"], cfg)
    seeds = torch.tensor([3, 7])
    generate_two_stage(Stub(), cfg, stage1, seeds)
    x_low = from_uint8(generate_images(stage1.net, stage1.cfg, seeds))          # (2, 1, 16, 16) as scored
    sigma0 = float(relay_sigmas(RELAY_SAMPLER["steps"])[0])
    proc = RelayProcess(cfg["diffusion"]["process"])
    noise = proc.noise.sample((2, 1, 32, 32), generator=[torch.Generator().manual_seed(stage_seed(s, 2))
                                                         for s in seeds])
    c_in = 1 / np.sqrt(sigma0**2 + 0.25)
    x, c_noise = first[0]
    torch.testing.assert_close(c_noise, torch.full((2,), np.log(sigma0) / 4, dtype=torch.float32))
    start = x / c_in                                                            # x_up + σ₀·noise
    torch.testing.assert_close(start, upsample_nearest(x_low, 2) + sigma0 * noise, rtol=0, atol=1e-5)
    torch.testing.assert_close(F.avg_pool2d(start - sigma0 * noise, 2), x_low, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------
# `dimr eval` of both stage-2 networks.


@pytest.mark.parametrize("name", ["cascade", "relay"])
def test_two_stage_eval_is_seed_per_image_and_records_nfe_and_kimg(nets, name, tmp_path):
    one, result, record = evaluate(nets, name, tmp_path / "b1", batch=1)
    four, _, _ = evaluate(nets, name, tmp_path / "b4", batch=4)
    assert one.shape == (N, 32, 32, 1) and one.dtype == np.uint8
    diff = np.abs(one.astype(int) - four.astype(int))  # batch shape may flip a float rounding, never more
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # (measured here: identical)
    stage2_nfe = (RelaySamplerConfig.from_dict(RELAY_SAMPLER) if name == "relay"
                  else SamplerConfig.from_dict(CASCADE_SAMPLER)).network_evaluations()
    if name == "relay":  # K levels below σ = 0.9, Heun-corrected but the last
        assert stage2_nfe == 2 * (len(relay_sigmas(RELAY_SAMPLER["steps"])) - 1) - 1
    p = result["protocol"]
    assert (p["stage1_nfe"], p["stage2_nfe"]) == (STAGE1_SAMPLER["steps"], stage2_nfe)
    assert p["nfe"] == STAGE1_SAMPLER["steps"] + stage2_nfe
    assert p["stage1_kimg"] == 0.016 and p["total_kimg"] == pytest.approx(0.032)
    assert p["stage1_network"] == str(nets["stage1"]) and result["metrics"]["fid"] > 0
    # The row names the samplers its images came from: stage 1's, and stage 2's blurred sampler for a
    # relay row (its sample.sampler is unused there), so a table never shows the recipe's sampler instead.
    first = p["stage1_sampler"]
    assert (first["sampler"], first["steps"]) == ("dpmpp-2m", STAGE1_SAMPLER["steps"])
    if name == "relay":
        assert (p["sampler"], p["steps"]) == ("relay-blur", RELAY_SAMPLER["steps"])
        assert p["relay_sampler"]["eta"] == 0.2 and p["guidance"] == {"scale": 0.0}  # the defaults
    else:
        assert (p["sampler"], p["steps"]) == ("dpmpp-2m", CASCADE_SAMPLER["steps"])
    stages = record["stages"]
    assert [n["network_dir"] for n in stages["networks"]] == [str(nets["stage1"]), str(nets[name])]
    assert [n["kimg"] for n in stages["networks"]] == [0.016, 0.016] and stages["nfe"] == p["nfe"]


def test_eval_identity_names_the_stage1_network_and_its_sampler(nets):
    base = eval_identity(eval_config(nets["relay"]))
    assert eval_identity(eval_config(nets["relay"], stage1="other-stage1")) != base
    other_sampler = eval_config(nets["relay"])
    other_sampler["sample"]["stage1"]["sampler"]["steps"] = 5
    assert eval_identity(other_sampler) != base


def test_dimr_eval_command_takes_stage1_from_set(nets, tmp_path):
    p = argparse.ArgumentParser()
    network_eval.add_arguments(p)
    ev = {"sample": {"num_samples": N, "grid": 0, "npz": False, "sampler": CASCADE_SAMPLER},
          "evaluate": nets["evaluate"]}
    args = p.parse_args([str(nets["cascade"]), "--spec", json.dumps(ev),
                         "--set", "sample.stage1.network=stage1", "--set", "sample.stage1.sampler.steps=2",
                         "--out", str(tmp_path / "e"), "--device", "cpu"])
    assert network_eval.run(args) == 0
    protocol = json.loads((tmp_path / "e" / "metrics.json").read_text())["protocol"]
    assert protocol["nfe"] == 2 + CASCADE_SAMPLER["steps"] and protocol["num_samples"] == N


def test_two_stage_errors_name_the_fix(nets, tmp_path):
    ev = {"evaluate": nets["evaluate"]}
    with pytest.raises(MissingFileError, match=r"no-such-net.*dimr train"):
        network_eval.evaluate_network(nets["relay"], eval_config(nets["relay"], "no-such-net", **ev),
                                      tmp_path / "a")
    # a 32-px "stage 1" (the check comes before its weights are read)
    wrong = nets["root"] / "stage1-32px"
    write_config(wrong, resolve_run_config({"preset": "tiny-uvit", "data": {"resolution": 32}}))
    (wrong / FINAL_NETWORK).touch()
    for name, fix in (("relay", r"makes 32×32 images.*patch 2\) needs 16×16"),
                      ("cascade", r"makes 32×32 images.*condition.resolution 16\) needs 16×16")):
        with pytest.raises(ConfigError, match=fix):
            network_eval.evaluate_network(nets[name], eval_config(nets[name], wrong.name, **ev),
                                          tmp_path / "b")
    shutil.rmtree(wrong)
    for name in ("relay", "cascade"):
        with pytest.raises(ConfigError, match=r"16-px stage-1 network.*sample\.stage1\.network="):
            network_eval.evaluate_network(nets[name], eval_config(nets[name], None, **ev), tmp_path / "c")
    with pytest.raises(ConfigError, match="is itself a stage-2 network"):
        network_eval.evaluate_network(nets["cascade"], eval_config(nets["cascade"], "relay", **ev),
                                      tmp_path / "d")
    with pytest.raises(ConfigError, match="single-stage network.*remove sample.stage1"):
        network_eval.evaluate_network(nets["stage1"], eval_config(nets["stage1"], "stage1", **ev),
                                      tmp_path / "e")
    assert not any((tmp_path / d).exists() for d in "abcde")  # nothing written before the checks
