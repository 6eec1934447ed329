"""Sampling sweeps: expansion of a study's grid, and selection on seeds the reported numbers never use."""

import sys
from pathlib import Path

import pandas as pd
import pytest

from dimr import studies

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))
import sweeps  # noqa: E402

G, S = sweeps.GUIDANCE, sweeps.STEPS


def test_sweep_grid_and_selection_evaluations_are_expanded_in_file_order():
    study = {"scales": {"tiny": {"sweep": {S: [8, 16], G: [0.0, 1.0]}, "select": {"key": G}}}}
    evals = studies.evaluations(study, "tiny")
    assert [e["role"] for e in evals] == ["main"] + ["sweep"] * 4 + ["select"] * 4
    grid = [{S: 8, G: 0.0}, {S: 8, G: 1.0}, {S: 16, G: 0.0}, {S: 16, G: 1.0}]
    assert [e["point"] for e in evals[1:5]] == grid
    assert all(e["point"]["sample.seed_start"] == studies.SELECT_SEED_START for e in evals[5:])
    assert studies.unflatten({G: 1.0}) == {"sample": {"sampler": {"guidance": {"scale": 1.0}}}}
    assert studies.evaluations({"scales": {"tiny": {}}}, "tiny") == [{"role": "main", "point": {}}]


def test_a_selected_key_must_be_swept(tmp_path):
    body = {"base": {"recipe": "tiny-fmnist"}, "sweep": {S: [8]}, "select": {"key": G}}
    study = {"title": "t", "scales": {"tiny": body}, "variants": {"a": {"tiny": {"preset": "tiny-dimr"}}}}
    with pytest.raises(studies.ConfigError, match="is not swept"):
        studies.validate_study(study, tmp_path / "s.yaml")


def rows(role: str, fids: dict, seeds=(0, 1)) -> list[dict]:
    """FID rows of one variant: {guidance: FID} at every seed (seed adds 0.1·seed)."""
    return [{"order": 0, "variant": "a", "label": "A", "eval": role, "metric": "fid", "seed": seed,
             f"sweep.{G}": g, "nfe": 16 if g == 0 else 32, "value": fid + 0.1 * seed}
            for g, fid in fids.items() for seed in seeds]


def test_selection_uses_only_the_selection_seeds_and_reports_only_the_other_ones():
    # On the selection seeds s = 1.0 looks best; on the reported seeds s = 0.5 would be.
    df = pd.DataFrame(rows("select", {0.0: 30, 0.5: 20, 1.0: 10}) + rows("sweep", {0.0: 31, 0.5: 9, 1.0: 12}))
    chosen = sweeps.select(df, [G], G)
    assert chosen[G].tolist() == [1.0]  # the selection never saw the reported 9
    assert chosen["select_fid"].iloc[0] == pytest.approx(10.05)
    assert chosen["mean"].iloc[0] == pytest.approx(12.05)  # reported: that point on the other seeds
    # The reported sweep (tables and both figures) never holds a selection-seed number.
    summ = sweeps.summary(df, [G])
    moved = df.copy()
    moved.loc[moved["eval"] == "select", "value"] += 1000
    pd.testing.assert_frame_equal(summ, sweeps.summary(moved, [G]))
    assert summ["mean"].tolist() == pytest.approx([31.05, 9.05, 12.05])
