"""Student-t intervals over seeds (workflow/scripts/stats_intervals.py) against hand computations."""

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))
import stats_intervals as si  # noqa: E402


def test_t_interval_of_four_values_matches_hand_computation():
    # mean 2.5, sd 1.29099 (ddof 1), t_{0.975, 3} = 3.18245, half-width 3.18245 · 1.29099 / √4 = 2.05426
    mean, lo, hi, n = si.t_interval([1, 2, 3, 4])
    assert n == 4 and mean == pytest.approx(2.5)
    assert lo == pytest.approx(2.5 - 2.05426, abs=1e-5) and hi == pytest.approx(2.5 + 2.05426, abs=1e-5)


def test_t_interval_level_changes_width():
    # t_{0.95, 3} = 2.35336: half-width 2.35336 · 1.29099 / 2 = 1.51909
    mean, lo, hi, _ = si.t_interval([1, 2, 3, 4], level=0.90)
    assert hi - mean == pytest.approx(1.51909, abs=1e-5)


def test_one_value_has_a_mean_and_no_bounds():
    mean, lo, hi, n = si.t_interval([7.5])
    assert (mean, n) == (7.5, 1) and math.isnan(lo) and math.isnan(hi)


def test_nan_values_are_dropped_and_none_left_is_all_nan():
    assert si.t_interval([1, float("nan"), 2, 3, 4]) == si.t_interval([1, 2, 3, 4])
    mean, lo, hi, n = si.t_interval([])
    assert n == 0 and math.isnan(mean) and math.isnan(lo) and math.isnan(hi)


def test_paired_delta_pairs_by_seed_and_drops_unpaired_seeds():
    a = {0: 10.0, 1: 12.0, 2: 11.0, 7: 99.0}  # seed 7 has no partner
    b = {0: 10.5, 1: 11.0, 2: 13.0, 5: -50.0}  # nor has seed 5
    d = si.paired_delta(a, b)
    # Δ = b − a = [0.5, −1.0, 2.0]: mean 0.5, sd 1.5, t_{0.975, 2} = 4.30265,
    # half-width 4.30265 · 1.5 / √3 = 3.72621
    assert d["n"] == 3 and d["mean"] == pytest.approx(0.5)
    assert d["lo"] == pytest.approx(0.5 - 3.72621, abs=1e-5)
    assert d["hi"] == pytest.approx(0.5 + 3.72621, abs=1e-5)
    assert d["significant"] is False


def test_paired_delta_is_significant_when_the_interval_excludes_zero():
    # Δ = [−4, −5, −3]: mean −4, sd 1, half 4.30265 / √3 = 2.48414 -> [−6.48, −1.52]
    d = si.paired_delta({0: 10, 1: 10, 2: 10}, {0: 6, 1: 5, 2: 7})
    assert d["mean"] == pytest.approx(-4.0) and d["hi"] == pytest.approx(-1.51586, abs=1e-5)
    assert d["significant"] is True


def test_paired_delta_of_one_pair_is_not_significant():
    d = si.paired_delta({0: 10.0, 1: 3.0}, {0: 4.0})
    assert d["n"] == 1 and d["mean"] == -6.0 and math.isnan(d["lo"]) and d["significant"] is False


def test_learned_and_meaningful_follow_the_noise_row_at_the_same_n():
    import aggregate
    import pandas as pd

    def row(run_dir, fid, n, reference=None):
        return {"run_dir": run_dir, "metric": "fid", "value": fid, "reference": reference,
                "num_samples": n, "protocol.num_samples": n, "protocol.meaningful": True}

    df = pd.DataFrame([row("noise", 300.0, 100, "uniform-noise"), row("a", 20.0, 100), row("b", 31.0, 100),
                       row("c", 5.0, 50)])
    out = aggregate.with_learned(df).set_index("run_dir")
    assert out.at["a", "learned"] is True and out.at["b", "learned"] is False  # threshold 300 / 10 = 30
    assert out.at["a", "meaningful"] and not out.at["b", "meaningful"]
    assert pd.isna(out.at["c", "learned"]) and out.at["c", "meaningful"]  # other N: cannot be tested


def test_contrast_of_four_terms_is_a_difference_of_paired_deltas():
    # (b − a) − (d − c) per seed: seed 0: (8 − 10) − (5 − 6) = −1; seed 1: (7 − 10) − (4 − 6) = −1;
    # seed 2: (6 − 11) − (5 − 7) = −3; seed 3 is missing from d and drops out.
    values = {"a": {0: 10, 1: 10, 2: 11, 3: 9}, "b": {0: 8, 1: 7, 2: 6, 3: 1},
              "c": {0: 6, 1: 6, 2: 7, 3: 2}, "d": {0: 5, 1: 4, 2: 5}}
    d = si.contrast(values, {"b": 1, "a": -1, "d": -1, "c": 1})
    # mean −5/3, sd 1.15470, half 4.30265 · 1.15470 / √3 = 2.86844
    assert d["n"] == 3 and d["mean"] == pytest.approx(-5 / 3)
    assert d["hi"] == pytest.approx(-5 / 3 + 2.86844, abs=1e-5) and d["significant"] is False
    # the two-term contrast is the paired Δ
    assert si.contrast(values, {"b": 1, "a": -1}) == si.paired_delta(values["a"], values["b"])
