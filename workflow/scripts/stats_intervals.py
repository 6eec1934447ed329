"""Confidence intervals over seeds for the tables and figures: Student-t intervals of a mean and of a
paired difference between two variants trained with the same seeds. numpy/scipy only; never torch.
"""

import math

import numpy as np
from scipy import stats

NAN = float("nan")


def clean(values) -> np.ndarray:
    """Float array of `values` without NaN (a metric a run did not compute is no observation)."""
    x = np.asarray(list(values), dtype=float)
    return x[~np.isnan(x)]


def t_interval(values, level: float = 0.95) -> tuple[float, float, float, int]:
    """(mean, lo, hi, n): Student-t interval of the mean, df = n − 1; NaN bounds for n < 2."""
    x = clean(values)
    n = len(x)
    if n == 0:
        return NAN, NAN, NAN, 0
    mean = float(x.mean())
    if n < 2:
        return mean, NAN, NAN, 1  # one seed says nothing about the spread between seeds
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half, n


def excludes_zero(lo: float, hi: float) -> bool:
    """True when the interval [lo, hi] lies wholly on one side of 0 (NaN bounds: False)."""
    return bool(lo > 0 or hi < 0)


def paired_delta(a_by_seed: dict, b_by_seed: dict, level: float = 0.95) -> dict:
    """Mean Δ = b − a over the seeds both have, its t interval, the number of pairs and `significant`.

    Pairing removes what the two variants share at one seed (data order, initial noise), so the
    interval is narrower than the difference of two unpaired intervals; seeds of only one are dropped.
    """
    return contrast({"a": a_by_seed, "b": b_by_seed}, {"b": 1, "a": -1}, level)


def contrast(values_by_variant: dict, weights: dict, level: float = 0.95) -> dict:
    """A contrast Σ_v c_v·value_v per seed, over the seeds every weighted variant ran: its mean, t
    interval, number of seeds and `significant`. `values_by_variant` is {variant: {seed: value}}.

    A paired Δ is the contrast {a: −1, b: +1}; a difference of two Δs (does a change help more in one
    setting than in another?) is a four-term one, paired by seed in the same way.
    """
    seeds = sorted(set.intersection(*(set(values_by_variant.get(v, {})) for v in weights)))
    per_seed = [sum(c * values_by_variant[v][s] for v, c in weights.items()) for s in seeds]
    mean, lo, hi, n = t_interval(per_seed, level)
    return {"mean": mean, "lo": lo, "hi": hi, "n": n, "significant": excludes_zero(lo, hi)}
