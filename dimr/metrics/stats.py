"""Feature statistics streamed in float64 and FID as a pure function of two statistics (EDM2 style).

A statistics file is an `.npz` with `mu` (D,) and `sigma` (D, D) in float64, `n`, an optional
`features` subset (K, D) for precision/recall, and `meta` (a JSON string: extractor, weights sha256,
source, content hash). ADM's reference batches (`VIRTUAL_imagenet*_labeled.npz`: `mu`, `sigma`,
`arr_0`) load through the same `load_stats`.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dimr.errors import ConfigError, MissingFileError
from dimr.io import atomic_savez, npz_errors, sha256_file

# ----------------------------------------------------------------------------
# Streaming: running sums n, Σf, Σffᵀ in float64 (EDM2 `FeatureStats`).


class FeatureStats:
    """Running float64 sums of features; keeps the first `max_keep` rows for precision/recall."""

    def __init__(self, dim: int, max_keep: int = 0, device="cpu"):
        self.dim, self.max_keep, self.n = dim, max_keep, 0
        self.sum = torch.zeros(dim, dtype=torch.float64, device=device)
        self.sum_outer = torch.zeros(dim, dim, dtype=torch.float64, device=device)
        self.kept: list[torch.Tensor] = []

    def update(self, feats: torch.Tensor) -> None:
        """Add a batch of features (N, D) (any float dtype; summed in float64)."""
        if feats.ndim != 2 or feats.shape[1] != self.dim:
            raise ValueError(f"expected features of shape (N, {self.dim}), got {tuple(feats.shape)}")
        kept = sum(len(k) for k in self.kept)
        if kept < self.max_keep:
            self.kept.append(feats[: self.max_keep - kept].float().cpu())
        x = feats.to(self.sum.device, torch.float64)  # (N, D)
        self.n += len(x)
        self.sum += x.sum(0)
        self.sum_outer += x.T @ x

    def mu_sigma(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and unbiased covariance (the normalisation of `np.cov`), float64 NumPy arrays."""
        if self.n < 2:
            raise ValueError(f"FID statistics need at least 2 images, got {self.n}")
        mu = self.sum / self.n
        sigma = (self.sum_outer - self.n * torch.outer(mu, mu)) / (self.n - 1)
        return mu.cpu().numpy(), sigma.cpu().numpy()

    def features(self) -> np.ndarray | None:
        return torch.cat(self.kept).numpy() if self.kept else None


# ----------------------------------------------------------------------------
# FID (Heusel et al. 2017, Eq. 6): |mu1 - mu2|² + tr(S1 + S2 - 2 (S1 S2)^½).


def fid_from_stats(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance of two float64 Gaussians by torch-fidelity's `fid_statistics_to_metric`."""
    # local: torch-fidelity loads torchvision (~1.5 s); run-config validation loads this module
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    mu1, mu2 = (np.atleast_1d(np.asarray(m, np.float64)) for m in (mu1, mu2))
    sigma1, sigma2 = (np.atleast_2d(np.asarray(s, np.float64)) for s in (sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ConfigError(f"FID statistics do not match: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} "
                          f"vs {sigma2.shape}; were both made with the same feature extractor?")
    if not all(np.isfinite(x).all() for x in (mu1, sigma1, mu2, sigma2)):
        raise ValueError("FID: the statistics hold NaN or inf (diverged samples or a corrupted file?)")
    # torch-fidelity 0.4.0 (TTUR fid.py): tr (S1 S2)^½ = Σ Re √eig(S1 S2), on our float64 mu/sigma
    stat1, stat2 = {"mu": mu1, "sigma": sigma1}, {"mu": mu2, "sigma": sigma2}
    return float(fid_statistics_to_metric(stat1, stat2, False)[KEY_METRIC_FID])


def fid_bootstrap(features: np.ndarray, mu_ref, sigma_ref, num: int, seed: int = 0) -> np.ndarray:
    """FIDs of `num` resamples (with replacement, same size) of generated features against one reference."""
    x = np.asarray(features, np.float64)
    rng = np.random.default_rng(seed)
    out = np.empty(num)
    for b in range(num):
        s = x[rng.integers(0, len(x), len(x))]
        out[b] = fid_from_stats(s.mean(0), np.cov(s, rowvar=False), mu_ref, sigma_ref)
    return out


def bootstrap_summary(fids: np.ndarray) -> dict:
    """Std and the 2.5 / 97.5 percentiles of bootstrap FIDs (a 95% percentile interval)."""
    lo, hi = np.percentile(fids, [2.5, 97.5])
    return {"fid_boot_std": float(np.std(fids, ddof=1)), "fid_boot_lo": float(lo), "fid_boot_hi": float(hi)}


# ----------------------------------------------------------------------------
# Files.


@dataclass
class Stats:
    """Statistics of one image set, as loaded from a file."""

    mu: np.ndarray                         # (D,) float64
    sigma: np.ndarray                      # (D, D) float64
    n: int | None = None                   # images behind mu/sigma (None: not recorded, ADM files)
    features: np.ndarray | None = None     # (K, D) subset for precision/recall
    meta: dict = field(default_factory=dict)
    kind: str = "dimr"                     # "dimr" (ours) or "adm" (reference batch with arr_0 images)
    path: str | None = None
    sha256: str | None = None


def save_stats(path, stats: FeatureStats, meta: dict) -> Path:
    """Write mu, sigma, n, the kept features and `meta` (JSON) atomically."""
    mu, sigma = stats.mu_sigma()
    meta_json = np.array(json.dumps(meta, sort_keys=True))  # a str array: loads without pickle
    arrays = {"mu": mu, "sigma": sigma, "n": np.int64(stats.n), "meta": meta_json}
    if (feats := stats.features()) is not None:
        arrays["features"] = feats
    return atomic_savez(path, **arrays)


def load_stats(path, sha256: str | None = None) -> Stats:
    """Load our statistics file or an ADM reference batch; mu/sigma cast to float64 (as ADM's evaluator)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"reference statistics not found: {path}; make them with `dimr reference "
                               f"{path} --data fashion-mnist --split train --extractor-weights FIDNET.pt` "
                               "or download ADM's VIRTUAL_imagenet*_labeled.npz")
    digest = sha256_file(path)
    if sha256 is not None and digest != sha256.lower():
        raise MissingFileError(f"{path}: sha256 {digest} differs from the expected {sha256}; "
                               "the reference statistics changed: regenerate them or fix the expected hash")
    try:
        return _read_stats(path, digest)
    except npz_errors() as e:
        raise ConfigError(f"reference statistics {path} are damaged or not an .npz ({type(e).__name__}: "
                          f"{e}); "
                          "make them again with `dimr reference` (or download ADM's file again)") from None


def _read_stats(path: Path, digest: str) -> "Stats":
    with np.load(path, allow_pickle=False) as z:
        if "mu" not in z or "sigma" not in z:
            raise ConfigError(f"{path} has no `mu`/`sigma` arrays (keys: {sorted(z.keys())}); "
                              "it is not a statistics file")
        mu, sigma = z["mu"].astype(np.float64), z["sigma"].astype(np.float64)
        if "meta" in z:
            return Stats(mu, sigma, int(z["n"]), z["features"] if "features" in z else None,
                         json.loads(str(z["meta"])), "dimr", str(path), digest)
        kind = "adm" if "arr_0" in z else "plain"
        return Stats(mu, sigma, None, None, {}, kind, str(path), digest)
