"""FID, IS and precision/recall through torch-fidelity 0.4.0, in ADM's evaluation protocol.

Streamed path (`dimr evaluate`, `dimr reference`): one pass over uint8 images through torch-fidelity's
own feature extractor, then
- FID: float64 running sums of the features (EDM2) -> `stats.fid_from_stats` (torch-fidelity's
  `metric_fid.fid_statistics_to_metric` on float64) against the reference `mu`/`sigma` (ours, or ADM's
  whole-training-set statistics);
- IS: ADM's consecutive chunks of 5,000 (the last one partial), each scored by
  `torch_fidelity.metric_isc.isc_features_to_metric(chunk, splits=1, shuffle=False)`, then averaged;
- precision/recall: `torch_fidelity.metric_prc.prc_features_to_metric(f_gen, f_ref, ...)`.
torch-fidelity functions used: `utils.create_feature_extractor`,
`FeatureExtractorBase.convert_features_tuple_to_dict`, the two metric functions above, and
`calculate_metrics` (`calculate_metrics_checked`: the all-in-one path on two uint8 datasets).
Pitfalls handled: unknown keyword arguments are errors (torch-fidelity ignores them silently); its
on-disk cache is off (its key ignores the weights, N and resizing); inputs are uint8 Datasets, never
its generator wrapper (which crashes on NumPy >= 1.24).
"""

import zipfile
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from dimr.errors import ConfigError
from dimr.io import npz_errors
from dimr.metrics import extractors
from dimr.metrics.stats import FeatureStats, Stats, fid_from_stats

IS_SPLIT_SIZE = 5000  # ADM: Inception Score over consecutive chunks of 5,000 samples
METRICS = ("fid", "is", "prc")


def fidelity_kwargs(**kw) -> dict:
    """Protocol defaults plus `kw`, every key checked against `torch_fidelity.defaults.DEFAULTS`."""
    # local: torch-fidelity loads torchvision (~1.5 s); run-config validation loads this module
    from torch_fidelity.defaults import DEFAULTS

    unknown = sorted(set(kw) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown torch-fidelity option(s) {unknown} (torch-fidelity would ignore them "
                          f"silently); valid: {sorted(DEFAULTS)}")
    if kw.get("cache"):
        raise ConfigError("torch-fidelity's cache key ignores the weights, N and resizing, so a cached entry "
                          "can belong to other images: dimr runs it with cache=False")
    out = {"cache": False, "samples_shuffle": False, "save_cpu_ram": True, "verbose": False,
           "datasets_download": False, "cuda": torch.cuda.is_available()}
    out.update(kw)
    return out


def isc_chunks(n: int, split_size: int = IS_SPLIT_SIZE) -> list[tuple[int, int]]:
    """(start, stop) of ADM's IS chunks: `for i in range(0, N, 5000)`, the trailing partial one included."""
    # ADM evaluator, evaluator.py compute_inception_score:
    # preds[i : i + split_size] for i in range(0, N, split_size)
    return [(i, min(i + split_size, n)) for i in range(0, n, split_size)]


def isc_splits(n: int, split_size: int = IS_SPLIT_SIZE) -> int:
    """Number of ADM IS chunks of N samples: ceil(N / 5000)."""
    return len(isc_chunks(n, split_size))


def inception_score(logits: torch.Tensor, split_size: int = IS_SPLIT_SIZE) -> dict:
    """IS as ADM's evaluator: exp(mean KL(p(y|x) || p(y))) per chunk (torch-fidelity's code), mean and std."""
    # local: torch-fidelity loads torchvision (~1.5 s); run-config validation loads this module
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, isc_features_to_metric

    chunks = isc_chunks(len(logits), split_size)
    # one split per call: torch-fidelity's softmax/KL on exactly ADM's chunk, no shuffling
    scores = [isc_features_to_metric(logits[a:b], 1, False)[KEY_METRIC_ISC_MEAN] for a, b in chunks]
    return {"is_mean": float(np.mean(scores)), "is_std": float(np.std(scores)), "is_splits": len(chunks),
            "is_split_size": split_size}


def conditional_accuracy(logits, labels) -> float:
    """Fraction of samples whose classifier argmax equals their conditioning label."""
    pred = np.asarray(torch.as_tensor(logits).argmax(1).cpu())
    labels = np.asarray(labels).reshape(-1)
    if pred.shape != labels.shape:
        raise ConfigError(f"accuracy: {len(pred)} classified samples but {len(labels)} labels")
    return float((pred == labels).mean())


# ----------------------------------------------------------------------------
# uint8 images in, in batches.


class ImageArrayDataset(Dataset):
    """uint8 (N, H, W, C) array as torch-fidelity wants it: uint8 (C, H, W) tensors."""

    def __init__(self, images: np.ndarray, channels: int | None = None):
        check_images(images)
        self.images, self.channels = images, channels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        x = torch.from_numpy(np.ascontiguousarray(self.images[i])).permute(2, 0, 1)  # (C, H, W)
        return x.expand(self.channels, -1, -1) if self.channels and x.shape[0] == 1 else x


def check_images(images) -> None:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ConfigError(f"expected uint8 images (N, H, W, 1|3), got {images.dtype} {tuple(images.shape)}")


class NpzImages:
    """An image array inside an .npz, read in batches without loading it whole (like ADM's evaluator)."""

    def __init__(self, path, key: str = "arr_0"):
        self.path, self.key = str(path), key
        with zipfile.ZipFile(self.path) as zf, zf.open(f"{key}.npy") as f:
            self.shape, self.fortran, self.dtype = _read_npy_header(f)

    def __len__(self):
        return self.shape[0]

    def batches(self, batch_size: int, limit: int | None = None):
        n = len(self) if limit is None else min(limit, len(self))
        if self.fortran:  # not written by np.savez of a C array: load it whole
            with np.load(self.path) as z:
                arr = z[self.key]
            yield from (arr[i:i + batch_size] for i in range(0, n, batch_size))
            return
        row = int(np.prod(self.shape[1:])) * self.dtype.itemsize
        with zipfile.ZipFile(self.path) as zf, zf.open(f"{self.key}.npy") as f:
            _read_npy_header(f)  # leaves `f` at the first element
            for i in range(0, n, batch_size):
                count = min(batch_size, n - i)
                try:  # the zip's CRC is checked as the last bytes are read: damage shows up here
                    buf = bytearray(f.read(count * row))  # writable, as torch.from_numpy wants
                    images = np.frombuffer(buf, self.dtype).reshape((count,) + tuple(self.shape[1:]))
                except npz_errors() as e:
                    raise ConfigError(f"{self.path} is damaged ({type(e).__name__}: {e}); nothing was "
                                      "written: delete it and make it again") from None
                yield images


def _read_npy_header(f):
    """(shape, fortran_order, dtype) of an open .npy stream (NumPy's public format helpers)."""
    fmt = np.lib.format
    version = fmt.read_magic(f)
    return (fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0)(f)


def image_batches(source, batch_size: int, limit: int | None = None):
    """uint8 (B, H, W, C) batches of an array, or of a source with `batches` (an `NpzImages`, images
    generated on demand), the first `limit` images."""
    if hasattr(source, "batches"):
        yield from source.batches(batch_size, limit)
        return
    check_images(source)
    n = len(source) if limit is None else min(limit, len(source))
    yield from (source[i:min(i + batch_size, n)] for i in range(0, n, batch_size))


class Upsampled:
    """An image source nearest-upsampled by `k` (each pixel repeated k x k), batch by batch."""

    def __init__(self, source, k: int):
        self.source, self.k = source, k

    def __len__(self) -> int:
        return len(self.source)

    def batches(self, batch_size: int, limit: int | None = None):
        for images in image_batches(self.source, batch_size, limit):
            yield images.repeat(self.k, axis=1).repeat(self.k, axis=2)


# ----------------------------------------------------------------------------
# The extractor and one streamed pass.


class Extractor:
    """torch-fidelity's extractor `name` (weights checked by sha256) on `device`."""

    def __init__(self, name: str, weights=None, sha256: str | None = None, device=None):
        # local: torch-fidelity loads torchvision (~1.5 s); run-config validation loads this module
        from torch_fidelity.utils import create_feature_extractor

        self.name, self.spec = name, extractors.register(name)
        self.weights = extractors.resolve_weights(name, weights, sha256)
        self.layers = [self.spec.fid_layer, self.spec.isc_layer]
        # built on the CPU, then moved to `device` (torch-fidelity's `cuda=True` means the current GPU)
        kwargs = fidelity_kwargs(feature_extractor_weights_path=self.weights.path, cuda=False)
        self.module = create_feature_extractor(self.spec.fidelity_name, self.layers, **kwargs)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.module.to(self.device)

    def __call__(self, images: np.ndarray) -> dict[str, torch.Tensor]:
        """uint8 (B, H, W, C) -> {layer: (B, D) float32}."""
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)  # (B, C, H, W)
        if self.spec.channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # grey -> RGB for Inception
        with torch.no_grad():
            out = self.module(x.to(self.device))
        return self.module.convert_features_tuple_to_dict(out)

    def protocol(self) -> dict:
        return {"extractor": self.name, "extractor_weights": self.weights.path,
                "extractor_weights_sha256": self.weights.sha256, "meaningful": self.weights.meaningful,
                "feature_layer_fid": self.spec.fid_layer, "feature_layer_is": self.spec.isc_layer}


@dataclass
class Features:
    """One pass over an image set: FID statistics, IS logits and a precision/recall subset."""

    stats: FeatureStats        # float64 sums of the FID layer; first `keep` rows kept
    logits: torch.Tensor       # (N, K) float32 IS layer, in input order


def extract(extractor: Extractor, source, batch_size: int = 64, limit: int | None = None,
            keep: int = 0, hasher=None) -> Features:
    """Stream `source` through the extractor; `hasher` (hashlib) sees the image bytes (content hash)."""
    stats, logits = None, []
    for images in image_batches(source, batch_size, limit):
        if hasher is not None:
            hasher.update(np.ascontiguousarray(images).tobytes())
        feats = extractor(images)
        fid_feats = feats[extractor.spec.fid_layer]
        if stats is None:
            stats = FeatureStats(fid_feats.shape[1], max_keep=keep, device=extractor.device)
        stats.update(fid_feats)
        logits.append(feats[extractor.spec.isc_layer].cpu())
    if stats is None:
        raise ConfigError("no images to evaluate")
    return Features(stats, torch.cat(logits))


# ----------------------------------------------------------------------------
# Metrics from features.


def check_reference(ref: Stats, extractor: Extractor) -> None:
    """Statistics are comparable only when made by the same extractor and weights."""
    if ref.kind == "dimr":
        got = (ref.meta.get("extractor"), ref.meta.get("extractor_weights_sha256"))
        if got != (extractor.name, extractor.weights.sha256):
            raise ConfigError(f"reference {ref.path} was made with extractor {got[0]} (weights {got[1]}), "
                              f"not {extractor.name} (weights {extractor.weights.sha256}); regenerate it "
                              "with `dimr reference` and the same weights")
    elif extractor.name != "inception-v3-compat":
        raise ConfigError(f"reference {ref.path} holds Inception statistics (ADM format); they need "
                          f"extractor 'inception-v3-compat', not {extractor.name!r}")


def reference_pr_features(ref: Stats, extractor: Extractor, num: int | None = None,
                          batch_size: int = 64) -> np.ndarray:
    """The first `num` reference features (None: all) for precision/recall: ours, or ADM's arr_0.

    Fewer than `num` available: all of them (the caller records how many were used).
    """
    if ref.features is not None:
        return ref.features[:num]
    if ref.kind == "adm":  # ADM's evaluator: the reference batch's arr_0 (10,000 images) through the net
        images = NpzImages(ref.path)
        num = len(images) if num is None else min(num, len(images))
        return extract(extractor, images, batch_size, limit=num, keep=num).stats.features()
    raise ConfigError(f"reference {ref.path} has no features for precision/recall; regenerate it with "
                      "`dimr reference ... --num-pr 10000` or drop 'prc' from evaluate.metrics")


def metrics_from_features(feats: Features, ref: Stats, metrics=METRICS, ref_pr: np.ndarray | None = None,
                          prc_neighborhood: int = 3, split_size: int = IS_SPLIT_SIZE,
                          num_pr: int | None = None) -> dict:
    """FID (float64 statistics), IS and precision/recall (torch-fidelity's functions) of extracted features.

    Precision/recall: the first `num_pr` kept generated features (None: all kept) against all of `ref_pr`.
    """
    # local: torch-fidelity loads torchvision (~1.5 s); run-config validation loads this module
    from torch_fidelity.metric_prc import prc_features_to_metric

    out = {}
    if "fid" in metrics:
        mu, sigma = feats.stats.mu_sigma()
        out["fid"] = fid_from_stats(mu, sigma, ref.mu, ref.sigma)
    if "is" in metrics:
        out.update(inception_score(feats.logits, split_size))
    if "prc" in metrics:
        gen = feats.stats.features()
        gen = gen[:num_pr] if gen is not None else None
        if gen is None or ref_pr is None or min(len(gen), len(ref_pr)) <= prc_neighborhood:
            raise ConfigError(f"precision/recall needs more than prc_neighborhood={prc_neighborhood} "
                              "features "
                              f"per side, got {0 if gen is None else len(gen)} generated and "
                              f"{0 if ref_pr is None else len(ref_pr)} reference")
        kw = fidelity_kwargs(prc_neighborhood=prc_neighborhood)
        real = torch.from_numpy(np.asarray(ref_pr, np.float32))
        r = prc_features_to_metric(torch.from_numpy(gen), real, **kw)  # input1 generated, input2 real
        out.update(precision=r["precision"], recall=r["recall"], prc_num_samples=len(gen),
                   prc_num_reference=len(ref_pr))
    return out


def calculate_metrics_checked(samples: np.ndarray, reference: np.ndarray, extractor: Extractor,
                              metrics=METRICS, **kw) -> dict:
    """torch-fidelity's `calculate_metrics` on two uint8 image arrays (input1 generated, input2 real)."""
    # local: torch-fidelity loads torchvision (~1.5 s); run-config validation loads this module
    import torch_fidelity

    spec = extractor.spec
    kwargs = dict(
        input1=ImageArrayDataset(samples, spec.channels), input2=ImageArrayDataset(reference, spec.channels),
        fid="fid" in metrics, isc="is" in metrics, prc="prc" in metrics,
        feature_extractor=spec.fidelity_name, feature_layer_fid=spec.fid_layer,
        feature_layer_prc=spec.fid_layer, feature_layer_isc=spec.isc_layer,
        # torch-fidelity's splits are N // splits-sized, ADM's chunks only when N < 5000 or N % 5000 == 0
        feature_extractor_weights_path=extractor.weights.path, isc_splits=isc_splits(len(samples)),
        cuda=extractor.device.type == "cuda")
    kwargs.update(kw)
    return torch_fidelity.calculate_metrics(**fidelity_kwargs(**kwargs))
