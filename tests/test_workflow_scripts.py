"""Aggregation, tables and figures on synthetic run directories (pandas/seaborn; no torch, no Snakemake)."""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))
import aggregate  # noqa: E402
import figures  # noqa: E402
import studies  # noqa: E402
import tables  # noqa: E402

FIDS = {"uvit": [12.0, 14.0, 16.0], "dimr": [8.0, 9.0, 13.0]}  # per seed
VARIANTS = [
    {"variant": "uvit", "label": "U-ViT (time token)", "order": 0, "paper_fid": 5.85, "paper_params": 130.9},
    {"variant": "dimr", "label": "+ multi-scale loss", "order": 1, "paper_fid": 3.65, "paper_params": None},
]
STUDY = {"study": "toy", "scale": "tiny", "title": "Toy roadmap", "paper_source": "Table 1",
         "variants": VARIANTS}
INFO = {"uvit": {"params": 1_500_000, "gmacs": 0.05}, "dimr": {"params": 2_250_000, "gmacs": 0.08}}


def make_runs(root: Path) -> list[dict]:
    """Run directories with metrics.json, config.json, training_log.jsonl and grid.png, as dimr writes."""
    rng = np.random.default_rng(0)
    runs = []
    for v in VARIANTS:
        for seed, fid in enumerate(FIDS[v["variant"]]):
            d = root / "runs" / "toy" / "tiny" / v["variant"] / f"seed{seed}"
            d.mkdir(parents=True)
            metrics = {"fid": fid, "is_mean": 2.0 + seed, "is_std": 0.1, "precision": 0.5, "recall": 0.25,
                       "clean_fid": None}
            protocol = {"extractor": "fmnist-net", "extractor_weights_sha256": "ab" * 32, "num_samples": 500,
                        "seed_range": [0, 499], "sampler": "dpmpp-2m", "steps": 10,
                        "evaluate": {"metrics": ["fid", "is", "prc"], "num_pr": 500}}
            (d / "metrics.json").write_text(json.dumps({"metrics": metrics, "protocol": protocol}))
            cfg = {"preset": f"tiny-{v['variant']}", "recipe": "tiny-fmnist", "seed": seed,
                   "train": {"total_kimg": 4.0, "batch_size": 64}, "sample": {"num_samples": 500}}
            (d / "config.json").write_text(json.dumps(cfg))
            lines = [{"step": k, "kimg": 0.5 * k, "loss": 1.0 / k + 0.01 * seed} for k in range(1, 9)]
            (d / "training_log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
            Image.fromarray(rng.integers(0, 255, (68, 68), dtype=np.uint8)).save(d / "grid.png")
            runs.append({"variant": v["variant"], "seed": seed, "run_dir": str(d)})
    return runs


@pytest.fixture
def long_table(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # run_dir paths are relative to the working directory, as in the workflow
    runs = make_runs(Path("."))
    return aggregate.aggregate(runs, STUDY, INFO)


def test_long_table_has_one_row_per_run_and_metric_with_protocol(long_table):
    df = long_table
    assert len(df) == 6 * 5  # 6 runs × (fid, is_mean, is_std, precision, recall); clean_fid null is skipped
    assert set(df["metric"]) == {"fid", "is_mean", "is_std", "precision", "recall"}
    fid = df[df["metric"] == "fid"]
    assert fid.set_index(["variant", "seed"])["value"].to_dict() == {
        (v, s): f for v, fs in FIDS.items() for s, f in enumerate(fs)}
    for col in ("protocol.extractor", "protocol.extractor_weights_sha256", "protocol.num_samples",
                "protocol.seed_range", "protocol.evaluate.num_pr", "protocol.steps"):
        assert df[col].notna().all(), col
    assert (df["protocol.seed_range"] == "[0, 499]").all()
    assert (df.loc[df["variant"] == "dimr", "params"] == 2_250_000).all()
    assert df["label"].tolist()[0] == "U-ViT (time token)"  # study order, not alphabetical


def test_long_table_round_trips_through_csv(long_table, tmp_path):
    long_table.to_csv(tmp_path / "t.csv", index=False)
    back = pd.read_csv(tmp_path / "t.csv")
    assert back.shape == long_table.shape
    assert tables.summarize(back).equals(tables.summarize(long_table))


def test_summary_mean_and_std_over_seeds(long_table):
    s = tables.summarize(long_table).set_index(["variant", "metric"])
    for variant, fids in FIDS.items():
        assert s.at[(variant, "fid"), "mean"] == pytest.approx(np.mean(fids))
        assert s.at[(variant, "fid"), "std"] == pytest.approx(np.std(fids, ddof=1))
        assert s.at[(variant, "fid"), "n"] == 3


def test_rendered_tables_show_mean_std_params_and_paper_figures(long_table):
    t = tables.table(tables.summarize(long_table))
    assert t["Variant"].tolist() == ["U-ViT (time token)", "+ multi-scale loss"]
    assert t.loc[0, "FID ↓"] == "14.00 ± 2.00"
    assert t.loc[1, "FID ↓"] == f"10.00 ± {np.std(FIDS['dimr'], ddof=1):.2f}"
    assert t.loc[0, "Params (M)"] == "1.50" and t.loc[1, "GMACs"] == "0.08"
    assert t.loc[0, "Paper FID"] == "5.85" and t.loc[1, "Paper params (M)"] == "–"
    notes = tables.notes(long_table, "Table 1")
    md = tables.to_markdown(t, "Toy", notes)
    assert "| U-ViT (time token) | 1.50" in md and "14.00 ± 2.00" in md and "fmnist-net" in md
    tex = tables.to_latex(t, "Toy", notes)
    assert r"14.00 $\pm$ 2.00" in tex and r"\toprule" in tex and "±" not in tex.replace("$\\pm$", "")
    assert "<td>14.00 ± 2.00</td>" in tables.to_html(t, "Toy", notes)


def test_one_seed_shows_mean_without_spread(long_table):
    one = long_table[long_table["seed"] == 0]
    t = tables.table(tables.summarize(one))
    assert t.loc[0, "FID ↓"] == "12.00" and t.loc[0, "Seeds"] == "1"


def test_figures_are_written_as_png(long_table, tmp_path):
    out = {name: tmp_path / f"{name}.png" for name in ("fid_bars", "fid_vs_gmacs", "training", "samples")}
    figures.make_figures(long_table, "Toy roadmap (tiny)", out)
    for name, path in out.items():
        with Image.open(path) as im:
            assert im.format == "PNG" and im.width > 300 and im.height > 200, name
    assert figures.first_seed_grids(long_table) == {
        "U-ViT (time token)": "runs/toy/tiny/uvit/seed0/grid.png",
        "+ multi-scale loss": "runs/toy/tiny/dimr/seed0/grid.png"}


def test_run_spec_merges_site_base_variant_and_scale():
    base = {"recipe": "tiny-fmnist", "preset": "tiny-uvit", "train": {"lr": 1.0, "total_kimg": 2.0}}
    variant = {"spec": {"train": {"lr": 2.0}}, "tiny": {"train": {"lr": 3.0}, "preset": "tiny-dimr"}}
    study = {"name": "s", "path": "ablations/s.yaml", "scales": {"tiny": {"seeds": [3, 4], "base": base}},
             "variants": {"v": variant}}
    site = {"tiny-fmnist": {"evaluate": {"reference": "ref.npz"}, "train": {"total_kimg": 9.0}}}
    runs = studies.runs_of(study, "tiny")
    assert [(r.variant, r.seed, r.dir) for r in runs] == [("v", 3, "runs/s/tiny/v/seed3"),
                                                         ("v", 4, "runs/s/tiny/v/seed4")]
    spec = studies.run_spec(study, runs[1], site)
    assert spec["train"] == {"lr": 3.0, "total_kimg": 2.0}  # the study wins over site defaults
    assert spec["preset"] == "tiny-dimr" and spec["seed"] == 4 and spec["name"] == "s/v/seed4"
    assert spec["evaluate"] == {"reference": "ref.npz"}
    assert studies.runs_of(study, "tiny", max_seeds=1) == runs[:1]
