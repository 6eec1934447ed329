"""`dimr eval NETWORK_DIR`: sample a trained network (or a snapshot of it) and score it in one pass.

An evaluation is a child of a network: its config (the `sample` and `evaluate` sections) and its results
live in NETWORK_DIR/evals/<id>/ (eval.json, metrics.json, grid.png; samples.npz only when
`sample.npz` is true, for ADM's evaluator; curve.json with --curve). The network's config.json and
weights are only read, so any number of samplers, step counts and guidance scales can be scored on one
network without touching it. Images stream from the sampler into the feature extractor (EDM2's
in-process statistics, `calculate_inception_stats`).
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

from dimr.config import (
    EVAL_SECTIONS,
    config_diff,
    deep_merge,
    git_commit,
    load_spec,
    parse_overrides,
)
from dimr.data.latents import load_vae
from dimr.errors import EXIT_REQUEUE, ConfigError, MissingFileError
from dimr.io import atomic_savez, atomic_write_json
from dimr.metrics.evaluate import EvaluateConfig, check_inputs, sampler_protocol, score_images
from dimr.preemption import PREEMPTED, run_requeueable
from dimr.run_config import eval_identity, load_run_config, resolve_eval_config, train_identity
from dimr.sampling.batch_store import BatchStore
from dimr.sampling.generate import GeneratedImages, class_label, network_from_state
from dimr.sampling.two_stage import load_stage1, stage2_kind, stage2_network_evaluations
from dimr.training.checkpoint import FINAL_NETWORK, list_snapshots, load_state

EVALS_DIR, EVAL_FILE = "evals", "eval.json"
ID_CHARS = 12  # of the eval config's sha256, naming its folder


def eval_dir_of(net_dir, ev: dict) -> Path:
    return Path(net_dir) / EVALS_DIR / eval_identity(ev)[:ID_CHARS]


def write_eval_config(eval_dir, net_dir, ev: dict, stages: dict | None = None) -> dict:
    """Write eval.json once; an existing one must hold the same sections (else: the differing keys).
    `stages`: a two-stage evaluation's networks (names, kimg, NFE), recorded with it."""
    path = Path(eval_dir) / EVAL_FILE
    if path.exists():
        old = load_eval_file(path)
        diff = config_diff({k: old[k] for k in EVAL_SECTIONS}, ev)
        if diff:
            raise ConfigError(f"{path} holds a different evaluation; differing keys:\n  " + "\n  ".join(diff)
                              + "\nWrite it to another folder (the default --out is named by its hash).")
        return old
    out = {**ev, "network_dir": str(net_dir), **({"stages": stages} if stages else {}),
           "provenance": {"git_commit": git_commit(), "eval_sha256": eval_identity(ev)}}
    atomic_write_json(path, out)
    return out


def load_eval_file(path) -> dict:
    try:
        cfg = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise MissingFileError(f"{path} not found: create it with `dimr eval NETWORK_DIR`") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON ({e}); delete it and rerun `dimr eval`") from None
    missing = [k for k in EVAL_SECTIONS if k not in cfg]
    if missing:
        raise ConfigError(f"{path}: missing section(s) {missing}; it was not written by `dimr eval`")
    return cfg


def run_config(net_cfg: dict, ev: dict) -> dict:
    """The network's training sections with an evaluation's: the config every sampling function reads."""
    return {**net_cfg, **ev}


def network_file(net_dir, snapshot: str | None) -> Path:
    """The final network, or a snapshot named by its file or its image count (kimg)."""
    if snapshot is None:
        return Path(net_dir) / FINAL_NETWORK
    if Path(snapshot).is_file():
        return Path(snapshot)
    try:
        nimg = round(float(snapshot) * 1000)
    except ValueError:
        raise ConfigError(f"--snapshot {snapshot!r}: a snapshot file or its kimg") from None
    for path in list_snapshots(net_dir):
        if int(path.stem.split("-")[-1]) == nimg:
            return path
    raise MissingFileError(f"no snapshot at kimg {snapshot} in {net_dir}; snapshots: "
                           f"{[p.name for p in list_snapshots(net_dir)]}")


def evaluate_network(net_dir, ev: dict, eval_dir=None, snapshot: str | None = None, device="cpu",
                     batch: int = 250) -> tuple[Path, dict]:
    """Sample and score one network file with evaluation `ev`; returns (eval folder, metrics result)."""
    # local: the grid needs torchvision (~1.5 s), and the workflow (common.smk) imports this module
    from dimr.sampling.grid import save_grid

    net_cfg = load_run_config(net_dir)
    eval_dir = Path(eval_dir) if eval_dir else eval_dir_of(net_dir, ev)
    path = network_file(net_dir, snapshot)
    if not path.is_file():
        raise MissingFileError(f"{path} not found: train the network first (`dimr train {net_dir}`)")
    evc = EvaluateConfig.from_dict(ev["evaluate"])
    inputs = check_inputs(evc)  # every input file, before sampling
    cfg = run_config(net_cfg, ev)
    stage1 = load_stage1(net_dir, cfg, device)  # None for a single-stage network; checked before writing
    state = load_state(path, what="network")
    cost = two_stage_cost(net_dir, cfg, state, stage1)
    write_eval_config(eval_dir, net_dir, ev, cost if stage1 is not None else None)
    s = ev["sample"]
    net = network_from_state(state, "ema" if s["ema"] else "model", device)
    vae = None
    if net_cfg["data"]["type"] == "latents":
        vae = load_vae(net_cfg["data"]["vae"]).to(device)
    n = evc.num_samples or s["num_samples"]
    seeds = torch.arange(s["seed_start"], s["seed_start"] + s["num_samples"])
    labels = class_label(seeds, net.num_classes).numpy()
    keep = max(s["grid"], evc.clean_fid_num if evc.clean_fid else 0)
    store = BatchStore(eval_dir, path)  # finished batches of an earlier, pre-empted job are read back
    saved = store.saved()
    if saved:
        print(f"{eval_dir}: resuming with {saved} images of finished batches", file=sys.stderr)
    images = GeneratedImages(net, cfg, seeds, device, vae, keep=min(keep, n), stage1=stage1, store=store)
    if s["npz"]:  # ADM's evaluator reads the file: make every image first, then score the array
        arr = images.all(batch)
        atomic_savez(eval_dir / "samples.npz", arr_0=arr, labels=labels, seeds=seeds.numpy(),
                     meta=np.array(json.dumps({"sample": s, "network": str(path)})))
        source = arr
    else:
        source = images
    result = score_images(source, labels, seeds.numpy(), n, evc, inputs, cfg, s, batch, device)
    result["protocol"].update(samples_sha256=images.sha256 if source is images else None,
                              network=str(path), network_kimg=state["cur_nimg"] / 1000,
                              train_sha256=train_identity(net_cfg), eval_sha256=eval_identity(ev),
                              sample_seconds=round(images.seconds, 3), resumed_images=store.loaded,
                              nfe=cost["nfe"],
                              total_kimg=cost["total_kimg"])
    if stage1 is not None:
        first, second = cost["networks"]
        result["protocol"].update(stage1_network=first["network_dir"], stage1_kimg=first["kimg"],
                                  stage1_train_sha256=first["train_sha256"], stage1_nfe=first["nfe"],
                                  stage2_nfe=second["nfe"], **two_stage_samplers(cfg, stage1))
    name = "metrics.json" if snapshot is None else f"metrics-{state['cur_nimg']:012d}.json"
    atomic_write_json(eval_dir / name, result)
    if s["grid"] and snapshot is None:
        held = next(images.batches(s["grid"], limit=s["grid"])) if source is images else source[: s["grid"]]
        save_grid(eval_dir / "grid.png", held, labels[: s["grid"]])
    store.discard()
    return eval_dir, result


def two_stage_samplers(cfg: dict, stage1) -> dict:
    """The samplers behind a two-stage row's images, for its metric row: stage 1's, and for a relay row
    stage 2's blurred sampler (Relay Diffusion §3) in place of `sample.sampler`, which it does not use."""
    out = {"stage1_sampler": sampler_protocol(stage1.cfg["sample"])}
    if stage2_kind(cfg) == "relay":
        relay = cfg["sample"]["relay"]  # every field, validated: resolve_eval_config filled it in
        out.update(sampler="relay-blur", steps=relay["steps"], guidance={"scale": relay["guidance"]},
                   relay_sampler=relay)
    return out


def two_stage_cost(net_dir, cfg: dict, state: dict, stage1) -> dict:
    """What a row costs: NFE per image and training images (kimg) over every network behind its images,
    stage 1 first (one network for a single-stage evaluation)."""
    networks = [] if stage1 is None else [{"network_dir": str(stage1.net_dir), "kimg": stage1.kimg,
                                           "train_sha256": stage1.train_sha256,
                                           "nfe": stage1.network_evaluations()}]
    networks.append({"network_dir": str(net_dir), "kimg": state["cur_nimg"] / 1000,
                     "train_sha256": train_identity(cfg), "nfe": stage2_network_evaluations(cfg)})
    return {"networks": networks, "nfe": sum(x["nfe"] for x in networks),
            "total_kimg": sum(x["kimg"] for x in networks)}


def parse_eval_arguments(args) -> dict:
    """The `over` sections of --spec (YAML or JSON text or file) and --set."""
    over = load_spec(args.spec) if args.spec else {}
    return deep_merge(over, parse_overrides(args.overrides))


def add_arguments(p):
    p.add_argument("network_dir", help="a trained network's folder (config.json, network-final.pt)")
    p.add_argument("--spec", default=None,
                   help="sample/evaluate sections as YAML or JSON (text or a file) over the network's own")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="sample.KEY=VALUE",
                   help="e.g. --set sample.sampler.steps=8 --set sample.sampler.guidance.scale=0.5")
    p.add_argument("--out", default=None, help="evaluation folder (default NETWORK_DIR/evals/<hash>)")
    p.add_argument("--snapshot", default=None, help="score this snapshot (file or kimg) instead")
    p.add_argument("--curve", action="store_true", help="score every snapshot at sample.snapshot_samples "
                   "(FID over training) into curve.json instead")
    p.add_argument("--batch", type=int, default=250, help="images per forward pass (speed only)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")


def run(args) -> int:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    net_cfg = load_run_config(args.network_dir)
    ev = resolve_eval_config(net_cfg, parse_eval_arguments(args))
    if args.curve:
        from dimr.metrics.curve import curve_of_network, run_curve  # local: curve imports this module

        return run_curve("dimr eval --curve", lambda: curve_of_network(args.network_dir, ev, args.out, device,
                                                                       args.batch))
    done = run_requeueable("dimr eval", "finished sample batches are saved",
                           lambda: evaluate_network(args.network_dir, ev, args.out, args.snapshot, device,
                                                    args.batch))
    if done is PREEMPTED:
        return EXIT_REQUEUE
    eval_dir, result = done
    shown = {k: round(v, 4) for k, v in result["metrics"].items() if v is not None}
    print(f"{eval_dir}: {shown}", file=sys.stderr)
    return 0
