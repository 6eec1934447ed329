"""Aggregation, tables and figures on synthetic run directories (pandas/seaborn; no torch, no Snakemake)."""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dimr import studies

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))
import aggregate  # noqa: E402
import figures  # noqa: E402
import tables  # noqa: E402

# FID per seed. "broken" ran seeds 0 and 1 only, and only its seed 1 beats noise/10 = 30 (N = 500).
FIDS = {"uvit": [12.0, 14.0, 16.0], "dimr": [8.0, 9.0, 13.0], "broken": [35.0, 25.0]}
ACCURACY = {"uvit": [0.6, 0.7, 0.8], "dimr": [0.8, 0.85, 0.9], "broken": [0.1, 0.2]}
VARIANTS = [
    {"variant": "uvit", "label": "U-ViT (time token)", "order": 0, "paper_fid": 5.85, "paper_params": 130.9},
    {"variant": "dimr", "label": "+ multi-scale loss", "order": 1, "paper_fid": 3.65, "paper_params": None},
    {"variant": "broken", "label": "+ broken idea", "order": 2, "paper_fid": None, "paper_params": None},
]
STUDY = {"study": "toy", "scale": "tiny", "title": "Toy roadmap", "paper_source": "Table 1",
         "variants": VARIANTS}
INFO = {"uvit": {"params": 1_500_000, "gmacs": 0.05}, "dimr": {"params": 2_250_000, "gmacs": 0.08},
        "broken": {"params": 2_250_000, "gmacs": 0.09}}
REFERENCES = {"real-test": ("Real test images", 0.5, 0.93), "uniform-noise": ("Uniform noise", 300.0, 0.1)}
N = 500
METRICS_PER_RUN = 9  # fid, is_mean, is_std, precision, recall, accuracy, fid_boot_std/lo/hi (clean_fid null)


def protocol(n: int = N) -> dict:
    return {"extractor": "fmnist-net", "extractor_weights_sha256": "ab" * 32, "num_samples": n,
            "meaningful": True, "seed_range": [0, n - 1], "sampler": "dpmpp-2m", "steps": 10,
            "evaluate": {"metrics": ["fid", "is", "prc"], "num_pr": 500}}


def write_metrics(d: Path, fid: float, accuracy: float, extra: dict, n: int = N):
    metrics = {"fid": fid, "is_mean": 2.0, "is_std": 0.1, "precision": 0.5, "recall": 0.25, "clean_fid": None,
               "accuracy": accuracy, "fid_boot_std": 0.5, "fid_boot_lo": fid - 1, "fid_boot_hi": fid + 1,
               **extra}
    d.mkdir(parents=True, exist_ok=True)
    (d / "metrics.json").write_text(json.dumps({"metrics": metrics, "protocol": protocol(n)}))


def make_runs(root: Path) -> list[dict]:
    """Run directories with metrics.json, config.json, curve.json and grid.png, as dimr writes them."""
    rng = np.random.default_rng(0)
    runs = []
    for v in VARIANTS:
        for seed, fid in enumerate(FIDS[v["variant"]]):
            d = root / "runs" / "toy" / "tiny" / v["variant"] / f"seed{seed}"
            write_metrics(d, fid, ACCURACY[v["variant"]][seed], {"is_mean": 2.0 + seed})
            cfg = {"preset": f"tiny-{v['variant']}", "recipe": "tiny-fmnist", "seed": seed,
                   "train": {"total_kimg": 4.0, "batch_size": 64}, "sample": {"num_samples": N}}
            (d / "config.json").write_text(json.dumps(cfg))
            points = [{"kimg": k, "fid": fid * (5 - k), "accuracy": 0.2 * k, "num_samples": 100}
                      for k in (1, 2, 4)]
            (d / "curve.json").write_text(json.dumps({"points": points, "protocol": protocol(100)}))
            Image.fromarray(rng.integers(0, 255, (68, 68), dtype=np.uint8)).save(d / "grid.png")
            # as the workflow's run_meta gives them: the network folder and its evaluations
            runs.append({"variant": v["variant"], "seed": seed, "network": f"net-{v['variant']}-{seed}",
                         "network_dir": str(d), "evals": [{"role": "main", "point": {}, "eval": "e",
                                                           "dir": str(d)}]})
    return runs


def make_references(root: Path, n: int = N) -> list[dict]:
    """Reference rows as `dimr baseline` + `dimr evaluate` write them, at the runs' N."""
    refs = []
    for kind, (label, fid, accuracy) in REFERENCES.items():
        d = root / "runs" / "toy" / "tiny" / "_reference" / kind
        write_metrics(d, fid, accuracy, {}, n)
        refs.append({"kind": kind, "label": label, "run_dir": str(d)})
    return refs


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # run_dir paths are relative to the working directory, as in the workflow
    return make_runs(Path("."))


@pytest.fixture
def long_table(runs):
    return aggregate.aggregate(runs, STUDY, INFO, make_references(Path(".")))


def test_long_table_has_one_row_per_run_and_metric_with_protocol(long_table):
    df = long_table
    runs = df[df["reference"] == ""]
    assert len(runs) == 8 * METRICS_PER_RUN and len(df) == 10 * METRICS_PER_RUN
    assert set(df["metric"]) == {"fid", "is_mean", "is_std", "precision", "recall", "accuracy",
                                 "fid_boot_std", "fid_boot_lo", "fid_boot_hi"}
    fid = runs[runs["metric"] == "fid"]
    assert fid.set_index(["variant", "seed"])["value"].to_dict() == {
        (v, s): f for v, fs in FIDS.items() for s, f in enumerate(fs)}
    for col in ("protocol.extractor", "protocol.extractor_weights_sha256", "protocol.num_samples",
                "protocol.seed_range", "protocol.evaluate.num_pr", "protocol.steps"):
        assert df[col].notna().all(), col
    assert (df["protocol.seed_range"] == "[0, 499]").all()
    assert (df.loc[df["variant"] == "dimr", "params"] == 2_250_000).all()
    assert df["label"].tolist()[0] == "Real test images"  # real data first, then study order, noise last
    assert df["label"].tolist()[METRICS_PER_RUN] == "U-ViT (time token)"
    assert df["label"].tolist()[-1] == "Uniform noise"


def test_reference_rows_have_kind_order_and_no_seed(long_table):
    ref = long_table[long_table["reference"] != ""].drop_duplicates("reference").set_index("reference")
    assert ref["order"].to_dict() == {"real-test": -1, "uniform-noise": 999}
    assert ref["seed"].isna().all() and ref["params"].isna().all()
    assert ref.loc["uniform-noise", "num_samples"] == N
    assert ref.loc["real-test", "label"] == "Real test images"
    noise = long_table[(long_table["reference"] == "uniform-noise") & (long_table["metric"] == "fid")]
    assert noise["value"].tolist() == [300.0]


def test_unknown_reference_kind_is_refused(runs):
    with pytest.raises(SystemExit, match="reference kind"):
        aggregate.aggregate(runs, STUDY, INFO, [{"kind": "imagenet", "label": "x", "run_dir": "nowhere"}])


def test_curve_table_has_one_row_per_run_and_snapshot(runs):
    paths = [f"{r['network_dir']}/curve.json" for r in runs]
    c = aggregate.curves(runs, paths, STUDY)
    assert len(c) == 8 * 3 and list(c.columns[:11]) == aggregate.CURVE_COLUMNS
    first = c[(c["variant"] == "uvit") & (c["seed"] == 0)]
    assert first["kimg"].tolist() == [1, 2, 4] and first["fid"].tolist() == [48.0, 36.0, 12.0]
    assert (c["num_samples"] == 100).all() and (c["protocol.num_samples"] == 100).all()
    with pytest.raises(SystemExit, match="one per run"):
        aggregate.curves(runs, paths[:-1], STUDY)


def test_long_table_round_trips_through_csv(long_table, tmp_path):
    long_table.to_csv(tmp_path / "t.csv", index=False)
    back = pd.read_csv(tmp_path / "t.csv")
    assert back.shape == long_table.shape
    assert tables.table(back).equals(tables.table(long_table))
    pd.testing.assert_frame_equal(tables.summarize(back), tables.summarize(long_table), check_dtype=False)


def test_summary_mean_std_and_t_interval_over_seeds(long_table):
    s = tables.summarize(long_table).set_index(["variant", "metric"])
    for variant, fids in FIDS.items():
        assert s.at[(variant, "fid"), "mean"] == pytest.approx(np.mean(fids))
        assert s.at[(variant, "fid"), "std"] == pytest.approx(np.std(fids, ddof=1))
        assert s.at[(variant, "fid"), "n"] == len(fids)
    # uvit: mean 14, sd 2, t_{0.975, 2} = 4.30265, half-width 4.30265 · 2 / √3 = 4.96828
    assert s.at[("uvit", "fid"), "lo"] == pytest.approx(9.03172, abs=1e-5)
    assert s.at[("uvit", "fid"), "hi"] == pytest.approx(18.96828, abs=1e-5)
    assert "real-test" not in s.index.get_level_values("variant")  # references are not variants


@pytest.fixture
def rendered(long_table):
    return tables.table(long_table).set_index("Variant")


def test_table_rows_are_real_data_variants_in_order_then_noise(rendered):
    assert rendered.index.tolist() == ["Real test images", "U-ViT (time token)", "+ multi-scale loss",
                                       "+ broken idea", "Uniform noise"]
    assert rendered.at["Real test images", "FID ↓"] == "0.50"
    noise = rendered.loc["Uniform noise"]
    assert noise["FID ↓"] == "300.00" and noise["Accuracy ↑"] == "0.100" and noise["Params (M)"] == "–"
    assert rendered.at["Real test images", "Seeds"] == "–"


def test_table_cells_show_mean_and_t_interval(rendered):
    r = rendered.loc["U-ViT (time token)"]
    assert r["FID ↓"] == "14.00 [9.03, 18.97]"
    assert r["Accuracy ↑"] == "0.700 [0.452, 0.948]"  # mean 0.7, sd 0.1, half 4.30265 · 0.1 / √3 = 0.24841
    assert r["Params (M)"] == "1.50" and r["Seeds"] == "3" and r["Paper FID"] == "5.85"
    assert rendered.at["+ multi-scale loss", "GMACs"] == "0.08"
    assert rendered.at["+ multi-scale loss", "Paper params (M)"] == "–"


def test_paired_delta_columns_with_significance_marker(rendered):
    assert rendered.at["U-ViT (time token)", "ΔFID vs prev"] == "–"
    # Δ = [8−12, 9−14, 13−16] = [−4, −5, −3]: mean −4, sd 1, half 4.30265 / √3 = 2.48414 (excludes 0)
    assert rendered.at["+ multi-scale loss", "ΔFID vs prev"] == "-4.00 [-6.48, -1.52]*"
    assert rendered.at["+ multi-scale loss", "ΔFID vs first"] == "-4.00 [-6.48, -1.52]*"
    # broken has seeds 0, 1: Δ vs dimr = [27, 16], mean 21.5, sd 7.77817, t_{0.975, 1} = 12.7062, half 69.884
    assert rendered.at["+ broken idea", "ΔFID vs prev"] == "+21.50 [-48.38, +91.38]"
    assert rendered.at["+ broken idea", "ΔFID vs first"] == "+17.00 [-59.24, +93.24]"  # Δ = [23, 11]


def test_sample_noise_floor_beside_seed_sd(rendered):
    assert rendered.at["U-ViT (time token)", "FID seed sd"] == "2.00"
    assert rendered.at["U-ViT (time token)", "FID sample-noise floor"] == "0.50"
    assert rendered.at["Uniform noise", "FID sample-noise floor"] == "0.50"


def test_learned_column_against_noise_at_the_same_n(rendered, long_table):
    assert rendered.at["U-ViT (time token)", "Learned"] == "yes"
    assert rendered.at["+ broken idea", "Learned"] == "1/2 seeds"  # 35 > 300/10, 25 ≤ 300/10
    bad = long_table[(long_table["variant"] != "broken") | (long_table["seed"] != 1)]
    assert tables.table(bad).set_index("Variant").at["+ broken idea", "Learned"] == "no"
    # noise scored at another N cannot judge the runs
    other_n = long_table.copy()
    other_n.loc[other_n["reference"] == "uniform-noise", "protocol.num_samples"] = 1000
    assert (tables.table(other_n).set_index("Variant").loc["U-ViT (time token)", "Learned"]) == "–"


def test_footnotes_and_renderings(long_table):
    t = tables.table(long_table)
    notes = tables.notes(long_table, "Table 1")
    text = "\n".join(notes)
    assert "fmnist-net" in text and "N = 500" in text and "sampler dpmpp-2m, 10 steps" in text
    assert "Student t with n − 1" in text and "* marks an interval that excludes 0" in text
    assert "10× below" in text and "threshold 30.00" in text and "Paper figures: Table 1" in text
    md = tables.to_markdown(t, "Toy", notes)
    assert "| U-ViT (time token) | 1.50" in md and "14.00 [9.03, 18.97]" in md
    tex = tables.to_latex(t, "Toy", notes)
    assert r"$\Delta$FID vs prev" in tex and r"\toprule" in tex and "-4.00 [-6.48, -1.52]*" in tex
    assert not any(c in tex for c in "±Δ↓↑–−×")
    assert "<td>14.00 [9.03, 18.97]</td>" in tables.to_html(t, "Toy", notes)


def test_one_seed_shows_mean_without_interval(long_table):
    one = long_table[(long_table["seed"] == 0) | (long_table["reference"] != "")]
    t = tables.table(one).set_index("Variant")
    r = t.loc["U-ViT (time token)"]
    assert r["FID ↓"] == "12.00" and r["Seeds"] == "1" and r["FID seed sd"] == "–"
    assert t.at["+ multi-scale loss", "ΔFID vs prev"] == "-4.00"  # one pair: no interval, no marker


def test_table_without_reference_rows_still_renders(runs):
    df = aggregate.aggregate(runs, STUDY, INFO)
    t = tables.table(df).set_index("Variant")
    assert "Uniform noise" not in t.index and t.at["U-ViT (time token)", "Learned"] == "–"
    assert "none was scored" in "\n".join(tables.notes(df, ""))


def test_figures_are_written_as_png(long_table, runs, tmp_path):
    curves = aggregate.curves(runs, [f"{r['network_dir']}/curve.json" for r in runs], STUDY)
    out = {name: tmp_path / f"{name}.png" for name in figures.FIGURES}
    grids = [f"{r['network_dir']}/grid.png" for r in runs]
    figures.make_figures(long_table, "Toy roadmap (tiny)", out, grids, curves)
    for name, path in out.items():
        with Image.open(path) as im:
            assert im.format == "PNG" and im.width > 300 and im.height > 200, name
    assert figures.first_seed_grids(long_table, grids) == {
        "U-ViT (time token)": "runs/toy/tiny/uvit/seed0/grid.png",
        "+ multi-scale loss": "runs/toy/tiny/dimr/seed0/grid.png",
        "+ broken idea": "runs/toy/tiny/broken/seed0/grid.png"}
    # only declared grids are shown: a variant whose grid is not an input is left out
    assert list(figures.first_seed_grids(long_table, grids[3:])) == ["+ multi-scale loss", "+ broken idea"]


def test_long_labels_are_wrapped_and_the_accuracy_panel_reuses_the_fid_labels(long_table, tmp_path,
                                                                              monkeypatch):
    label = "+ dropout at the 16x16-and-lower levels (simple diffusion)"
    assert all(len(line) <= 34 for line in figures.wrap(label, 34).split("\n"))
    assert figures.wrap(label, 34).replace("\n", " ") == label and figures.wrap("", 10) == ""
    saved = {}
    monkeypatch.setattr(figures, "save", lambda fig, path: saved.update(fig=fig))
    figures.fid_bars(long_table, "Toy roadmap (tiny)", tmp_path / "bars.png")
    left, right = saved["fig"].axes[:2]
    assert [t.get_text() for t in left.get_yticklabels()] == ["U-ViT (time token)", "+ multi-scale loss",
                                                              "+ broken idea"]
    assert figures.same_rows(long_table, "fid", "accuracy")
    assert left.yaxis.get_tick_params()["labelleft"] and not right.yaxis.get_tick_params()["labelleft"]


def test_figures_without_curves_or_references(runs, tmp_path):
    df = aggregate.aggregate(runs, STUDY, {})  # no GMACs either
    out = {name: tmp_path / f"{name}.png" for name in figures.FIGURES}
    figures.make_figures(df, "Toy", out, [], None)
    assert all(p.stat().st_size > 0 for p in out.values())


def test_figure_names_match_the_workflow_and_have_captions():
    root = Path(__file__).resolve().parents[1] / "workflow"
    for name in figures.FIGURES:
        assert (root / "report" / f"{name}.rst").is_file(), name


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


class Files(list):
    """Snakemake's Namedlist in small: positional and named entries."""

    def __init__(self, *items, **named):
        super().__init__([*items, *named.values()])
        self.__dict__.update(named)

    def __getitem__(self, key):
        return getattr(self, key) if isinstance(key, str) else super().__getitem__(key)

    def items(self):
        return list(vars(self).items())


def test_scripts_main_with_the_rules_inputs_params_and_outputs(runs, tmp_path):
    """aggregate -> tables, figures through their `main`, named as the rules name them."""
    from types import SimpleNamespace

    Path("info.json").write_text(json.dumps(INFO))
    refs = make_references(Path("."))
    out = tmp_path / "results"
    out.mkdir()
    agg = SimpleNamespace(
        input=Files(info="info.json", curves=[f"{r['network_dir']}/curve.json" for r in runs]),
        output=Files(f"{out}/toy.csv", curves=f"{out}/toy_curves.csv"), log=[f"{out}/agg.log"],
        params=SimpleNamespace(runs=runs, study=STUDY, references=refs))
    aggregate.main(agg)
    tab = SimpleNamespace(
        input=Files(f"{out}/toy.csv"), log=[f"{out}/tab.log"], params=SimpleNamespace(study=STUDY),
        output=Files(md=f"{out}/toy.md", tex=f"{out}/toy.tex", html=f"{out}/toy.html",
                     summary=f"{out}/toy_summary.csv"))
    tables.main(tab)
    assert "14.00 [9.03, 18.97]" in Path(f"{out}/toy.md").read_text()
    assert len(pd.read_csv(f"{out}/toy_summary.csv")) == 3 * METRICS_PER_RUN
    fig = SimpleNamespace(
        input=Files(table=f"{out}/toy.csv", grids=[f"{r['network_dir']}/grid.png" for r in runs],
                    curves=f"{out}/toy_curves.csv"),
        output=Files(**{name: f"{out}/{name}.png" for name in figures.FIGURES}), log=[f"{out}/fig.log"],
        params=SimpleNamespace(study=STUDY))
    figures.main(fig)
    assert all(Path(f"{out}/{name}.png").stat().st_size > 0 for name in figures.FIGURES)


def test_protocol_note_names_the_sampler_and_the_guidance(long_table):
    note = tables.protocol_note(long_table)
    assert "sampler dpmpp-2m, 10 steps" in note and "guidance" not in note  # fixture: no guidance key
    guided = long_table.assign(**{"protocol.guidance.scale": 1.5})
    assert "classifier-free guidance s = 1.5" in tables.protocol_note(guided)
    assert "no guidance" in tables.protocol_note(long_table.assign(**{"protocol.guidance.scale": 0.0}))


def test_protocol_note_names_each_rows_sampler_where_the_rows_differ(long_table):
    # A relay row's stage 2 uses the blurred sampler, not the recipe's: the note says which rows used which,
    # and the stage-1 sampler of the two-stage rows.
    dimr = long_table["variant"] == "dimr"
    two_stage = long_table.assign(**{"protocol.guidance.scale": 1.5}).assign(**{
        "protocol.sampler": long_table["protocol.sampler"].where(~dimr, "relay-blur"),
        "protocol.steps": long_table["protocol.steps"].where(~dimr, 18),
        "protocol.stage1_sampler.sampler": np.where(dimr, "dpmpp-2m", None),
        "protocol.stage1_sampler.steps": np.where(dimr, 12, np.nan),
        "protocol.stage1_sampler.guidance.scale": np.where(dimr, 1.5, np.nan)})
    label = long_table.loc[dimr, "label"].iloc[0]
    note = tables.protocol_note(two_stage)
    assert f"sampler relay-blur, 18 steps, classifier-free guidance s = 1.5 ({label})" in note
    assert "sampler dpmpp-2m, 10 steps, classifier-free guidance s = 1.5 (U-ViT (time token)" in note
    assert ("stage 1 of the two-stage rows: sampler dpmpp-2m, 12 steps, classifier-free guidance s = 1.5."
            in note)


CONTRASTS = {
    "gain": {"label": "multi-scale loss against U-ViT", "terms": {"dimr": 1, "uvit": -1},
             "expect": "negative", "claim": "Table 1"},
    "again": {"label": "broken idea's gain over the loss's", "terms": {"broken": 1, "dimr": -2, "uvit": 1},
              "expect": "negative"},
    "plain": {"label": "no claim", "terms": {"uvit": 1, "dimr": -1}},
}


def test_contrasts_are_paired_by_seed_with_a_verdict_on_the_claim(long_table):
    c = tables.contrast_table(long_table, CONTRASTS).set_index("Contrast")
    gain = c.loc["multi-scale loss against U-ViT"]
    # Δ = [−4, −5, −3] (as the ΔFID column): excludes 0 on the predicted side
    assert gain["Estimate"] == "-4.00 [-6.48, -1.52]*" and gain["Seeds"] == "3"
    assert gain["Verdict"] == "supports" and gain["Claim"] == "Table 1"
    assert gain["Σ c·FID of"] == "[+ multi-scale loss] − [U-ViT (time token)]"
    # broken ran seeds 0, 1: 35 − 16 + 12 = 31, 25 − 18 + 14 = 21: mean 26, half 12.7062 · 7.07107 / √2
    # = 63.53
    again = c.loc["broken idea's gain over the loss's"]
    assert again["Σ c·FID of"] == "[+ broken idea] − 2·[+ multi-scale loss] + [U-ViT (time token)]"
    assert again["Estimate"] == "+26.00 [-37.53, +89.53]" and again["Seeds"] == "2"
    assert again["Verdict"] == "cannot tell (interval contains 0)"
    assert c.at["no claim", "Verdict"] == "–" and c.at["no claim", "Estimate"] == "+4.00 [+1.52, +6.48]*"
    flipped = {"x": {**CONTRASTS["gain"], "expect": "positive"}}
    assert tables.contrast_table(long_table, flipped)["Verdict"].tolist() == ["contradicts"]
    one = long_table[(long_table["seed"] == 0) | (long_table["reference"] != "")]
    assert tables.contrast_table(one, CONTRASTS)["Verdict"].tolist()[0] == "cannot tell (one seed)"
    assert tables.contrast_table(long_table, {}) is None


def test_contrasts_are_rendered_under_the_table(long_table):
    t, notes = tables.table(long_table), tables.notes(long_table, "")
    c = tables.contrast_table(long_table, CONTRASTS)
    md = tables.to_markdown(t, "Toy", notes, c)
    assert md.index("## Contrasts") > md.index("| U-ViT (time token)") and "-4.00 [-6.48, -1.52]\\*" in md
    page = tables.to_html(t, "Toy", notes, c)
    assert "<h3>Contrasts</h3>" in page and "<table class=\"dataframe contrasts\">" in page
    tex = tables.to_latex(t, "Toy", notes, c)
    assert tex.count(r"\toprule") == 2 and "supports" in tex and not any(ch in tex for ch in "Σ·§−Δ")
    assert "## Contrasts" not in tables.to_markdown(t, "Toy", notes)
