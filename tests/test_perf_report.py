"""workflow/scripts/benchmark_report.py on synthetic pytest-benchmark JSON files (no torch in the script)."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "workflow" / "scripts"
sys.path.insert(0, str(SCRIPTS))
import benchmark_report  # noqa: E402


def bench(name, group, median, **extra):
    stats = {"median": median, "mean": median, "stddev": 0.0, "min": median, "rounds": 3}
    return {"name": name, "group": group, "stats": stats, "extra_info": extra}


def write_results(path, machine, gpu, when, train_img_s):
    data = {
        "datetime": when,
        "machine_info": {"dimr": {"machine": machine, "gpu": gpu, "cuda": "12.4" if gpu else None,
                                  "torch": "2.14.1", "git_commit": "abc123", "matmul_peak_tflops": 700.0}},
        "benchmarks": [
            bench("test_train_step[dit-xl-2-compile-off]", "train", 0.5, kind="train", preset="dit-xl-2",
                  compiled=False, precision="bf16", batch=64, gmacs=118.6, images_per_s=train_img_s,
                  tflops=300.0, mfu=0.43, peak_memory_gib=40.2),
            bench("test_train_step[dimr-xl-2r-compile-off]", "train", 0.6, kind="train", preset="dimr-xl-2r",
                  compiled=False, precision="bf16", batch=64, gmacs=160.2, images_per_s=train_img_s / 2,
                  tflops=250.0, mfu=0.36, peak_memory_gib=50.0),
            bench("test_sample[dit-xl-2-ddim-25]", "sample", 2.0, kind="sample", preset="dit-xl-2",
                  sampler="ddim", steps=25, nfe=25, batch=256, guidance=0.4, images_per_s=128.0,
                  s_per_nfe=0.08, s_per_image_eval=0.08 / 512, gmacs=118.6, peak_memory_gib=10.0),
            bench("test_feature_extraction[fmnist-net-64]", "evaluate", 0.1, kind="extract",
                  extractor="fmnist-net", batch=64, image_size=32, images_per_s=5000.0),
            bench("test_fid_from_stats[2048]", "evaluate", 3.2, kind="fid", feature_dim=2048, fid_s=3.2),
        ],
    }
    path.write_text(json.dumps(data))


def section_rows(md: str, heading: str) -> list[list[str]]:
    """Cells of the body rows of the Markdown table under `heading`."""
    lines = md.split(heading)[1].split("\n## ")[0].strip().splitlines()
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("|")][2:]


@pytest.fixture
def results(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    write_results(folder / "h100-old.json", "nvidia-h100", "NVIDIA H100", "2026-01-01T00:00:00", 100.0)
    write_results(folder / "h100-new.json", "nvidia-h100", "NVIDIA H100", "2026-02-01T00:00:00", 128.0)
    write_results(folder / "a100.json", "nvidia-a100", "NVIDIA A100", "2026-01-15T00:00:00", 60.0)
    return folder


def test_report_shows_newest_file_per_machine(results, tmp_path):
    out = {k: tmp_path / "out" / v for k, v in benchmark_report.OUTPUTS.items()}
    shown = benchmark_report.make_report(sorted(results.glob("*.json")), out)
    assert set(shown["file"]) == {"h100-new.json", "a100.json"}
    csv = pd.read_csv(out["csv"])
    assert len(csv) == 15 and set(csv["file"]) == {"h100-old.json", "h100-new.json", "a100.json"}
    md = out["md"].read_text()
    train = section_rows(md, "## Training step")
    h100 = ["nvidia-h100", "dit-xl-2", "False", "bf16", "64", "119", "128.0", "300.000", "43.0%", "40.2"]
    a100 = ["nvidia-a100", "dit-xl-2", "False", "bf16", "64", "119", "60.0", "300.000", "43.0%", "40.2"]
    assert h100 in train and a100 in train
    assert len(train) == 4  # two presets on two machines; the older H100 file is not shown
    assert ["nvidia-h100", "dit-xl-2", "ddim", "25", "25", "256", "0.4", "128.00", "80.0", "10.0"] in \
        section_rows(md, "## Sampling")
    assert ["nvidia-a100", "2048", "3.200"] in section_rows(md, "## FID")
    assert out["figure"].stat().st_size > 10_000


def test_table_formats_missing_values_as_dashes():
    df = pd.DataFrame([{"kind": "train", "machine": "cpu-2t", "preset": "tiny-dimr", "compiled": False,
                        "precision": "fp32", "batch": 16, "gmacs": 0.0778, "images_per_s": 6.2,
                        "tflops": 0.003, "mfu": 0.05, "peak_memory_gib": None}])
    row = benchmark_report.table(df, "train").iloc[0]
    assert row["Peak memory (GiB)"] == "–" and row["GMACs"] == "0.0778" and row["MFU"] == "5.0%"


def test_no_results_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="make bench"):
        benchmark_report.load_results([])


def test_script_runs_without_torch(results, tmp_path):
    code = (f"import sys; sys.path.insert(0, {str(SCRIPTS)!r}); import benchmark_report; "
            f"benchmark_report.main([{str(results)!r}, {str(tmp_path / 'rep')!r}]); "
            "assert 'torch' not in sys.modules, 'the report imported torch'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert (tmp_path / "rep" / "benchmarks.md").is_file()
