"""Fashion-MNIST feature network for FID / IS / precision-recall, registered with torch-fidelity.

Inception features are meaningless on Fashion-MNIST and no Inception weights can be fetched
offline, so the workflow trains this classifier itself (`dimr fidnet OUT_DIR`): deterministic (fixed
seed, fixed data order, `torch.use_deterministic_algorithms`), on the train split at the diffusion
models' resolution (padded 32×32, or 16×16 down-sampled: `dimr.data.fit_resolution`), its test
accuracy measured on the test split. Features: `feat` (fc1, the penultimate layer) for FID and
precision/recall; `logits` (with bias) for IS; `logits_unbiased` mirrors Inception's IS layer name.

Pre-empted (SIGUSR2, SIGTERM), `dimr fidnet` exits dimr.errors.EXIT_REQUEUE and the requeued job trains
again from the start: a restart costs at most the whole command (30 s to 4 min at the tiny scale,
docs/ARCHITECTURE.md, dispatch), all a checkpoint could save. Its two files are written, atomically, only
after training.
"""

import contextlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_fidelity
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from dimr.data import fit_resolution
from dimr.data.fashion_mnist import DEFAULT_ROOT, load_fashion_mnist
from dimr.errors import EXIT_REQUEUE, CheckpointError, MissingFileError
from dimr.io import atomic_torch_save, atomic_write_json, sha256_file
from dimr.preemption import PREEMPTED, run_requeueable

FIDELITY_NAME = "dimr-fmnist-net"  # name in torch-fidelity's FEATURE_EXTRACTORS_REGISTRY
RESOLUTION = 32                    # default side: padded Fashion-MNIST
FORMAT = "dimr-fidnet-v1"
WEIGHTS_FILE, INFO_FILE = "fidnet.pt", "fidnet.json"


def pad_to_resolution(images: np.ndarray, resolution: int = RESOLUTION, upsample: int = 1) -> np.ndarray:
    """uint8 (N, 28, 28) -> (N, R, R, 1): the images `FashionMNIST` trains on, as uint8."""
    return fit_resolution(images, resolution, upsample)[..., None]


# ----------------------------------------------------------------------------
# Network.


class FashionNet(nn.Module):
    """Small VGG-style classifier on uint8 (N, C, R, R) images; fc1's output is the feature."""

    def __init__(self, widths=(16, 32, 64), feature_dim: int = 128, num_classes: int = 10,
                 resolution: int = RESOLUTION):
        super().__init__()
        self.arch = {"widths": list(widths), "feature_dim": feature_dim, "num_classes": num_classes,
                     "resolution": resolution}
        self.resolution = resolution
        layers, c_in = [], 1
        for w in widths:  # 32 -> 16 -> 8 -> 4 (16 -> 8 -> 4 -> 2)
            layers += [nn.Conv2d(c_in, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = w
        self.body = nn.Sequential(*layers)
        side = resolution // 2 ** len(widths)
        self.fc1 = nn.Linear(c_in * side * side, feature_dim)
        self.fc2 = nn.Linear(feature_dim, num_classes)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 grey or RGB -> float grey in [-1, 1], the `FashionMNIST` data set's scaling."""
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected uint8 images (N, 1|3, H, W), got {x.dtype} {tuple(x.shape)}")
        r = self.resolution
        if x.shape[-2:] != (r, r):
            raise ValueError(f"this fmnist-net was trained on {r}×{r} images, got {tuple(x.shape[-2:])}: "
                             f"train one at that resolution with `dimr fidnet OUT --resolution "
                             f"{x.shape[-1]}`")
        return x.float().mean(1, keepdim=True) / 127.5 - 1  # RGB of a grey image: mean is exact

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.preprocess(x)                 # (N, 1, R, R)
        h = self.body(x).flatten(1)            # (N, 64 * (R/8)²)
        feat = self.fc1(h)                     # (N, feature_dim)
        return feat, self.fc2(F.relu(feat))    # (N, feature_dim), (N, num_classes)


def load_fidnet(path) -> FashionNet:
    """FashionNet from a `fidnet.pt` written by `dimr fidnet` (eval mode)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"Fashion-MNIST feature network not found: {path}; "
                               f"train it with `dimr fidnet {path.parent}`")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, not a torch file
        raise CheckpointError(f"cannot read {path} ({e}); retrain with `dimr fidnet {path.parent}`") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} file; retrain with `dimr fidnet {path.parent}`")
    net = FashionNet(**ckpt["arch"])
    net.load_state_dict(ckpt["state_dict"])
    return net.eval().requires_grad_(False)


class FeatureExtractorFashionNet(FeatureExtractorBase):
    """torch-fidelity feature extractor around FashionNet; weights from `feature_extractor_weights_path`."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:  # torch-fidelity would download; we never do
            raise MissingFileError("fmnist-net needs `feature_extractor_weights_path` (a fidnet.pt from "
                                   "`dimr fidnet OUT_DIR`); it has no download")
        self.net = load_fidnet(feature_extractor_weights_path)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x):
        feat, logits = self.net(x)  # (N, D), (N, K)
        out = {"feat": feat, "logits": logits, "logits_unbiased": logits - self.net.fc2.bias}
        return tuple(out[name].float() for name in self.features_list)

    @staticmethod
    def get_provided_features_list():
        return "feat", "logits", "logits_unbiased"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits", "fid": "feat", "kid": "feat", "prc": "feat"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 1, RESOLUTION, RESOLUTION, dtype=torch.uint8)  # never compiled


def register() -> None:
    """Register with torch-fidelity once (`register_feature_extractor` raises on a second call)."""
    current = FEATURE_EXTRACTORS_REGISTRY.get(FIDELITY_NAME)
    if current is None:
        torch_fidelity.register_feature_extractor(FIDELITY_NAME, FeatureExtractorFashionNet)
    elif current is not FeatureExtractorFashionNet:
        raise RuntimeError(f"torch-fidelity already has a different {FIDELITY_NAME!r} extractor ({current})")


# ----------------------------------------------------------------------------
# Deterministic training.


@contextlib.contextmanager
def deterministic(seed: int):
    """Seeded RNG and deterministic kernels inside the block; the caller's state is restored after."""
    was = torch.are_deterministic_algorithms_enabled()
    was_fill = torch.utils.deterministic.fill_uninitialized_memory
    if torch.cuda.is_available():  # cuBLAS needs a fixed workspace for reproducible GEMMs
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        # NaN-filling of torch.empty is a debugging aid, not needed for determinism; it halves CPU speed
        torch.utils.deterministic.fill_uninitialized_memory = False
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was)
            torch.utils.deterministic.fill_uninitialized_memory = was_fill


def accuracy(net: FashionNet, images: np.ndarray, labels: np.ndarray, device, batch: int = 1000) -> float:
    """Top-1 accuracy on uint8 (N, H, W, 1) images."""
    correct = 0
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(images[i:i + batch]).permute(0, 3, 1, 2).to(device)
            correct += int((net(x)[1].argmax(1).cpu().numpy() == labels[i:i + batch]).sum())
    return correct / len(images)


def train_fidnet(out_dir, epochs: int = 2, seed: int = 0, num_train: int | None = None,
                 num_test: int | None = None, batch_size: int = 256, lr: float = 2e-3, root=None,
                 device="cpu", resolution: int = RESOLUTION, log=print, upsample: int = 1) -> dict:
    """Train on the train split, measure test accuracy, write fidnet.pt and fidnet.json; return the json."""
    root = root or DEFAULT_ROOT
    x_train, y_train = load_fashion_mnist(root, "train")
    x_test, y_test = load_fashion_mnist(root, "test")
    num_train = len(x_train) if num_train is None else min(num_train, len(x_train))
    x_train = pad_to_resolution(x_train[:num_train], resolution, upsample)
    x_train = torch.from_numpy(x_train).permute(0, 3, 1, 2)
    y_train = torch.from_numpy(y_train[:num_train].copy())
    device = torch.device(device)
    start = time.perf_counter()
    with deterministic(seed):
        net = FashionNet(resolution=resolution).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        steps = epochs * -(-num_train // batch_size)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / steps)  # linear decay to 0
        order = torch.Generator().manual_seed(seed)  # fixed data order, independent of the init draws
        for epoch in range(epochs):
            net.train()
            perm = torch.randperm(num_train, generator=order)
            total = 0.0
            for i in range(0, num_train, batch_size):
                idx = perm[i:i + batch_size]
                loss = F.cross_entropy(net(x_train[idx].to(device))[1], y_train[idx].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(idx)
            log(f"fidnet epoch {epoch + 1}/{epochs}: train loss {total / num_train:.4f}")
        net.eval()
    train_seconds = time.perf_counter() - start
    num_test = len(x_test) if num_test is None else min(num_test, len(x_test))
    acc = accuracy(net, pad_to_resolution(x_test[:num_test], resolution, upsample), y_test[:num_test], device)
    out_dir = Path(out_dir)
    weights = out_dir / WEIGHTS_FILE
    state = {k: v.cpu() for k, v in net.state_dict().items()}
    # The old record goes first: stopped between the two writes, no fidnet.json describes other weights.
    (out_dir / INFO_FILE).unlink(missing_ok=True)
    atomic_torch_save(weights, {"format": FORMAT, "arch": net.arch, "state_dict": state})
    info = {
        "weights": WEIGHTS_FILE, "sha256": sha256_file(weights), "test_accuracy": acc,
        "epochs": epochs, "seed": seed, "num_train": num_train, "num_test": num_test,
        "batch_size": batch_size, "lr": lr,
        "feature_dim": net.arch["feature_dim"], "resolution": resolution,
        **({"upsample": upsample} if upsample > 1 else {}),
        "train_seconds": round(train_seconds, 2),
        "device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "data_root": str(root),
    }
    atomic_write_json(out_dir / INFO_FILE, info)
    log(f"fidnet: test accuracy {acc:.4f}, trained in {train_seconds:.1f} s -> {weights}")
    return info


def recorded_sha256(weights) -> str | None:
    """The sha256 that `dimr fidnet` recorded next to `weights` (fidnet.json), if there is one."""
    info = Path(weights).with_name(INFO_FILE)
    if not info.is_file():
        return None
    rec = json.loads(info.read_text())
    return rec.get("sha256") if rec.get("weights") == Path(weights).name else None


# ----------------------------------------------------------------------------
# Command line: `dimr fidnet OUT_DIR`.


def add_arguments(p):
    p.add_argument("out_dir", help=f"folder for {WEIGHTS_FILE} and {INFO_FILE}")
    p.add_argument("--epochs", type=int, default=2, help="passes over the train split (2: ~90%% accuracy)")
    p.add_argument("--seed", type=int, default=0, help="initialisation and data-order seed")
    p.add_argument("--num-train", type=int, default=None, help="first N training images (default all)")
    p.add_argument("--num-test", type=int, default=None, help="first N test images to score (default all)")
    p.add_argument("--data-root", default=None, help="Fashion-MNIST IDX folder (default Debian's)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (results differ between devices)")
    p.add_argument("--resolution", type=int, default=RESOLUTION,
                   help="image side: the diffusion models' data.resolution (32 padded, 16 down-sampled)")
    p.add_argument("--upsample", type=int, default=1, help="the models' data.upsample (nearest factor)")


def run(args) -> int:
    done = run_requeueable("dimr fidnet", "the net is trained again from the start",
                           lambda: train_fidnet(args.out_dir, epochs=args.epochs, seed=args.seed,
                                                num_train=args.num_train, num_test=args.num_test,
                                                root=args.data_root, device=args.device,
                                                resolution=args.resolution, upsample=args.upsample))
    return EXIT_REQUEUE if done is PREEMPTED else 0
