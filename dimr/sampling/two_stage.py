"""A stage-2 network's stage 1: the network named by `sample.stage1`, loaded and checked against it.

Two-stage rows: a cascade (Ho et al. 2022, §3: a super-resolution network conditioned on the upsampled
stage-1 image, sampled from pure noise) and Relay Diffusion (Teng et al. 2023, §3: stage 2 starts from
the blurred, nearest-upsampled stage-1 image). Generation itself is `generate.generate_two_stage`.
"""

from dataclasses import dataclass
from pathlib import Path

import torch

from dimr.diffusion import RelaySamplerConfig, SamplerConfig
from dimr.errors import ConfigError, MissingFileError
from dimr.run_config import load_run_config, train_identity
from dimr.sampling.generate import is_stage2, network_from_state
from dimr.training.checkpoint import FINAL_NETWORK, load_state


@dataclass
class Stage1:
    """A loaded stage-1 network and the config it samples with (its training sections, stage1.sampler)."""

    net_dir: Path
    net: torch.nn.Module
    cfg: dict
    kimg: float            # images it was trained on (its final network's counter)
    train_sha256: str

    def network_evaluations(self) -> int:
        return SamplerConfig.from_dict(self.cfg["sample"]["sampler"]).network_evaluations()


def stage1_dir(net_dir, network: str) -> Path:
    """`sample.stage1.network` as a folder: a relative name is a sibling of the stage-2 network's folder
    (runs/networks/<name>), so an evaluation's identity does not depend on the working directory."""
    path = Path(network)
    return path if path.is_absolute() else Path(net_dir).parent / path


def stage2_kind(cfg: dict) -> str:
    """'relay' | 'cascade' | 'single' for a run config."""
    if not is_stage2(cfg):
        return "single"
    return "relay" if cfg["diffusion"]["process"]["type"] == "relay-blur" else "cascade"


def low_resolution_of(cfg: dict) -> int:
    """The stage-1 side a stage-2 network expects: its side / relay patch, or its condition's resolution."""
    d, side = cfg["diffusion"], cfg["model"]["resolution"]
    return side // d["process"]["patch"] if stage2_kind(cfg) == "relay" else d["condition"]["resolution"]


def require_stage1(net_dir, cfg: dict) -> None:
    """A stage-2 network evaluated without `sample.stage1` is an error naming the fix."""
    kind = stage2_kind(cfg)
    if kind != "single" and not cfg["sample"].get("stage1"):
        what = "a relay-blur (Relay Diffusion stage 2)" if kind == "relay" else "a cascade super-resolution"
        low = low_resolution_of(cfg)
        raise ConfigError(f"{net_dir} is {what} network: it samples from a {low}-px stage-1 network's "
                          f"images; set sample.stage1.network to that network's folder, e.g. `dimr eval "
                          f"{net_dir} --set sample.stage1.network=<name next to it>`")


def check_stages(net_dir, cfg: dict, s1_dir, cfg1: dict) -> None:
    """The stage-1 network must be single-stage, make images of the stage-2 network's low side, and share
    its channels and classes."""
    kind = stage2_kind(cfg)
    if kind == "single":
        raise ConfigError(f"sample.stage1 is set but {net_dir} is a single-stage network (diffusion.process "
                          "vp, condition none); remove sample.stage1")
    if stage2_kind(cfg1) != "single":
        raise ConfigError(f"sample.stage1.network {s1_dir} is itself a stage-2 network; name a single-stage "
                          "network (diffusion.process vp, condition none)")
    if cfg["data"]["type"] == "latents" or cfg1["data"]["type"] == "latents":
        raise ConfigError("two-stage evaluation works on pixel networks; latent networks are not supported")
    low, side, side1 = low_resolution_of(cfg), cfg["model"]["resolution"], cfg1["model"]["resolution"]
    if side1 != low:
        factor = (f"diffusion.process.patch {cfg['diffusion']['process']['patch']}" if kind == "relay"
                  else f"diffusion.condition.resolution {low}")
        raise ConfigError(f"sample.stage1.network {s1_dir} makes {side1}×{side1} images, but {net_dir} "
                          f"({side} px, {factor}) needs {low}×{low}: set sample.stage1.network to a {low}-px "
                          f"network, or train the stage-2 network for {side1}-px inputs")
    for key in ("in_channels", "num_classes"):
        if cfg1["model"][key] != cfg["model"][key]:
            raise ConfigError(f"sample.stage1.network {s1_dir} has model.{key} {cfg1['model'][key]}, "
                              f"{net_dir} {cfg['model'][key]}: both stages must see the same data set")


def load_stage1(net_dir, cfg: dict, device="cpu") -> Stage1 | None:
    """The stage 1 of `cfg["sample"]["stage1"]` (None when empty), checked against the stage-2 network."""
    require_stage1(net_dir, cfg)
    st = cfg["sample"].get("stage1")
    if not st:
        return None
    s1_dir = stage1_dir(net_dir, st["network"])
    final = s1_dir / FINAL_NETWORK
    if not final.is_file():
        raise MissingFileError(f"sample.stage1.network {st['network']!r}: {final} not found; train that "
                               f"stage-1 network first (`dimr train {s1_dir}`), or set sample.stage1.network "
                               f"to a trained network's folder (a name next to {net_dir}, or an absolute "
                               "path)")
    cfg1 = load_run_config(s1_dir)
    check_stages(net_dir, cfg, s1_dir, cfg1)
    state = load_state(final, what="network")
    net = network_from_state(state, "ema" if st["ema"] else "model", device)
    cfg1 = {**cfg1, "sample": {**cfg1.get("sample", {}), "sampler": st["sampler"]}}
    return Stage1(s1_dir, net, cfg1, state["cur_nimg"] / 1000, train_identity(cfg1))


def stage2_network_evaluations(cfg: dict) -> int:
    """NFE per image of a network's own sampler: the relay sampler for relay-blur, else `sample.sampler`."""
    if stage2_kind(cfg) == "relay":
        return RelaySamplerConfig.from_dict(cfg["sample"]["relay"]).network_evaluations()
    return SamplerConfig.from_dict(cfg["sample"]["sampler"]).network_evaluations()
