"""`dimr curve RUN_DIR`: FID and conditional accuracy of every training snapshot -> RUN_DIR/curve.json.

Each snapshot (`train.snapshot_kimg`) and the final network sample the first `sample.snapshot_samples`
seeds of the run's sample set with the run's sampler; the metrics use the run's evaluate section
(extractor, reference statistics), so a point of the curve differs from metrics.json only in N.

Every snapshot's finished sample batches are kept on disk (dimr.sampling.batch_store, tag "curve", beside
curve.json) while the curve is made: a job pre-empted or requeued (SIGUSR2, SIGTERM) exits
dimr.errors.EXIT_REQUEUE and the rerun reads them back, so its curve.json equals an uninterrupted one
(each image depends only on its seed and the snapshot). The stores are removed once curve.json is written.
"""

import json
import sys
from pathlib import Path

import torch

from dimr.config import git_commit
from dimr.data.latents import load_vae
from dimr.errors import EXIT_REQUEUE, MissingFileError
from dimr.io import atomic_write_json
from dimr.metrics.evaluate import EvaluateConfig
from dimr.metrics.fidelity import Extractor, Upsampled, check_reference, conditional_accuracy, extract
from dimr.metrics.network_eval import eval_dir_of, run_config, write_eval_config
from dimr.metrics.stats import fid_from_stats, load_stats
from dimr.preemption import PREEMPTED, run_requeueable
from dimr.run_config import load_run_config, train_identity
from dimr.sampling.batch_store import BatchStore
from dimr.sampling.generate import GeneratedImages, class_label, network_from_state
from dimr.sampling.two_stage import load_stage1
from dimr.training.checkpoint import FINAL_NETWORK, list_snapshots, load_state

CURVE_FILE = "curve.json"
STORE_TAG = "curve"  # its batch stores' tag: `dimr eval` of the final network may run in the same folder


def snapshot_networks(run_dir) -> list[Path]:
    """Snapshots in training order, then the final network (if not already a snapshot)."""
    final = Path(run_dir) / FINAL_NETWORK
    if not final.is_file():
        raise MissingFileError(f"{final} not found: train the run first (`dimr train {run_dir}`)")
    return [*list_snapshots(run_dir), final]


def curve_run(run_dir, device="cpu", batch: int = 250) -> dict:
    """The curve of a run folder with its own sample and evaluate sections -> RUN_DIR/curve.json."""
    cfg = load_run_config(run_dir)
    return write_curve(Path(run_dir) / CURVE_FILE, run_dir, cfg, device, batch)


def curve_of_network(net_dir, ev: dict, eval_dir=None, device="cpu", batch: int = 250) -> dict:
    """The curve of a network under evaluation `ev` -> <eval folder>/curve.json (`dimr eval --curve`)."""
    eval_dir = Path(eval_dir) if eval_dir else eval_dir_of(net_dir, ev)
    snapshot_networks(net_dir)  # checked before anything is written
    cfg = run_config(load_run_config(net_dir), ev)
    stage1 = load_stage1(net_dir, cfg, device)  # a stage-2 network: every snapshot from the same stage 1
    write_eval_config(eval_dir, net_dir, ev)
    return write_curve(eval_dir / CURVE_FILE, net_dir, cfg, device, batch, stage1)


def write_curve(out: Path, net_dir, cfg: dict, device="cpu", batch: int = 250, stage1=None) -> dict:
    """Score every snapshot of the network in `net_dir` with `cfg`'s sampler and protocol; write `out`.
    Finished batches of every snapshot are kept beside `out` until it is written (a requeued job resumes)."""
    ev = EvaluateConfig.from_dict(cfg["evaluate"])
    extractor = Extractor(ev.extractor, ev.extractor_weights, ev.extractor_sha256, device)
    ref = load_stats(ev.reference, ev.reference_sha256)
    check_reference(ref, extractor)
    paths = snapshot_networks(net_dir)  # checked before any sampling
    n, start = cfg["sample"]["snapshot_samples"], cfg["sample"]["seed_start"]
    seeds = torch.arange(start, start + n)
    vae = load_vae(cfg["data"]["vae"]).to(device) if cfg["data"]["type"] == "latents" else None
    points, seen, stores = [], set(), []
    for path in paths:
        state = load_state(path, what="network snapshot")
        if state["cur_nimg"] in seen:  # the last snapshot is the final network
            continue
        seen.add(state["cur_nimg"])
        net = network_from_state(state, "ema", device)
        store = BatchStore(Path(out).parent, path, tag=STORE_TAG)
        stores.append(store)
        if saved := store.saved():
            print(f"{net_dir}: kimg {state['cur_nimg'] / 1000:g}: resuming with {saved} images of "
                  "finished batches", file=sys.stderr, flush=True)
        images = GeneratedImages(net, cfg, seeds, device, vae, stage1=stage1, store=store).all(batch)
        feats = extract(extractor, Upsampled(images, ev.upsample) if ev.upsample > 1 else images, batch)
        labels = class_label(seeds, net.num_classes).numpy()
        points.append({"kimg": state["cur_nimg"] / 1000, "fid": fid_from_stats(*feats.stats.mu_sigma(),
                                                                                 ref.mu, ref.sigma),
                       "accuracy": conditional_accuracy(feats.logits, labels), "num_samples": n})
        print(f"{net_dir}: kimg {points[-1]['kimg']:.1f}  FID {points[-1]['fid']:.2f}  "
              f"accuracy {points[-1]['accuracy']:.3f}", flush=True)
    protocol = {**extractor.protocol(), "num_samples": n, "seed_range": [start, start + n - 1],
                "sampler": cfg["sample"]["sampler"], "reference": str(ev.reference), "upsample": ev.upsample,
                "reference_sha256": ref.sha256, "git_commit": git_commit(),
                "config_sha256": cfg.get("provenance", {}).get("config_sha256"),
                "train_sha256": train_identity(cfg)}
    # resumed_images: read back after a requeue; beside the points and protocol, which it never changes
    result = {"points": points, "protocol": protocol, "resumed_images": sum(s.loaded for s in stores)}
    atomic_write_json(out, result)
    for store in stores:
        store.discard()
    return result


def run_curve(command: str, make_curve) -> int:
    """`make_curve()`, requeueable (the finished batches of every snapshot stay on disk); print the points."""
    out = run_requeueable(command, "finished sample batches of every snapshot are saved", make_curve)
    if out is PREEMPTED:
        return EXIT_REQUEUE
    print(json.dumps(out["points"]))
    return 0


def add_arguments(p):
    p.add_argument("run_dir", help="a finished run with snapshots (train.snapshot_kimg > 0)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")


def run(args) -> int:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return run_curve("dimr curve", lambda: curve_run(args.run_dir, device))
