"""`dimr reference OUT.npz`: reference feature statistics of a data set (FID mu/sigma, a PR subset).

For Fashion-MNIST the images are the padded 32×32 split in its file order (what the diffusion models
see, uint8, background 0). Any other image set can be given as an .npz with `arr_0` (N, H, W, C) uint8.

Pre-empted (SIGUSR2, SIGTERM), `dimr reference` exits dimr.errors.EXIT_REQUEUE and the requeued job
extracts again from the start (under a minute at the tiny scale; docs/ARCHITECTURE.md); the statistics
file is written, atomically, only at the end.
"""

import hashlib
from pathlib import Path

import torch_fidelity

from dimr import __version__
from dimr.config import git_commit
from dimr.data.fashion_mnist import DEFAULT_ROOT, load_fashion_mnist
from dimr.errors import EXIT_REQUEUE, ConfigError, MissingFileError
from dimr.io import sha256_file
from dimr.metrics.fidelity import Extractor, NpzImages, extract
from dimr.metrics.fidnet import RESOLUTION, pad_to_resolution
from dimr.metrics.stats import save_stats
from dimr.preemption import PREEMPTED, run_requeueable


def reference_images(data: str, split: str = "train", root=None, num: int | None = None,
                     resolution: int = RESOLUTION, upsample: int = 1):
    """(uint8 images or `NpzImages`, source description) of a data set name or an images .npz."""
    if data == "fashion-mnist":
        root = root or DEFAULT_ROOT
        images, _ = load_fashion_mnist(root, split)
        return pad_to_resolution(images[:num], resolution, upsample), {
            "data": data, "split": split, "root": str(root), "resolution": resolution,
            **({"upsample": upsample} if upsample > 1 else {})}
    path = Path(data)
    if path.suffix != ".npz":
        raise ConfigError(f"--data {data!r}: expected 'fashion-mnist' or an .npz with arr_0 (N, H, W, C)")
    if not path.is_file():
        raise MissingFileError(f"image file not found: {path}")
    return NpzImages(path), {"data": str(path), "data_sha256": sha256_file(path)}


def make_reference(out, extractor: Extractor, source, source_meta: dict, num: int | None = None,
                   num_pr: int = 10000, batch_size: int = 64) -> dict:
    """Extract, then write mu/sigma (float64), the first `num_pr` features and metadata to `out`."""
    hasher = hashlib.sha256()
    feats = extract(extractor, source, batch_size, limit=num, keep=num_pr, hasher=hasher)
    meta = {**extractor.protocol(), "num": feats.stats.n, "num_pr": min(num_pr, feats.stats.n),
            "source": source_meta, "content_sha256": hasher.hexdigest(),
            "torch_fidelity": torch_fidelity.__version__, "dimr": __version__, "git_commit": git_commit()}
    save_stats(out, feats.stats, meta)
    return meta


# ----------------------------------------------------------------------------
# Command line.


def add_arguments(p):
    p.add_argument("out", help="statistics file to write (.npz)")
    p.add_argument("--data", default="fashion-mnist", help="'fashion-mnist' or an .npz with arr_0 images")
    p.add_argument("--split", default="train", choices=["train", "test"], help="Fashion-MNIST split")
    p.add_argument("--data-root", default=None, help="Fashion-MNIST IDX folder (default Debian's)")
    p.add_argument("--resolution", type=int, default=RESOLUTION,
                   help="Fashion-MNIST image side (the models' data.resolution: 32 padded, 16 down-sampled)")
    p.add_argument("--upsample", type=int, default=1, help="the models' data.upsample (nearest factor)")
    p.add_argument("--num", type=int, default=None, help="use the first N images (default all)")
    p.add_argument("--num-pr", type=int, default=10000, help="features kept for precision/recall")
    p.add_argument("--extractor", default="fmnist-net", choices=["fmnist-net", "inception-v3-compat"])
    p.add_argument("--extractor-weights", default=None, help="weights file (fidnet.pt or the Inception .pth)")
    p.add_argument("--extractor-sha256", default=None, help="expected sha256 of the weights")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (speed only)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")


def run(args) -> int:
    def reference():
        extractor = Extractor(args.extractor, args.extractor_weights, args.extractor_sha256, args.device)
        source, meta = reference_images(args.data, args.split, args.data_root, args.num, args.resolution,
                                        args.upsample)
        return make_reference(args.out, extractor, source, meta, args.num, args.num_pr, args.batch_size)

    out = run_requeueable("dimr reference", "the features are extracted again from the start", reference)
    if out is PREEMPTED:
        return EXIT_REQUEUE
    print(f"reference: {out['num']} images, extractor {out['extractor']} -> {args.out}")
    return 0
