# One command per task; each runs the idempotent set-up first.
.PHONY: setup test default report bench lint

CORES ?= 2

setup:
	tools/setup.sh

# The whole test suite, SLURM integration tests included (they start and stop their own cluster).
test: setup
	.venv/bin/python -m pytest -q

# The embedded default: the tiny table1 study on Fashion-MNIST, locally, then the HTML report.
default: setup
	.venv/bin/snakemake --cores $(CORES)
	.venv/bin/snakemake --cores $(CORES) --report reports/report.html

# Throughput benchmarks (pytest-benchmark), saved as JSON under results/benchmarks/.
bench: setup
	.venv/bin/python -m pytest benchmarks --benchmark-only --benchmark-enable -q --bench-threads 1
	.venv/bin/python workflow/scripts/benchmark_report.py

# `snakemake --lint` prints a few deliberate lints, so it is checked by a test instead
# (tests/test_workflow_dag.py::test_lint_leaves_only_deliberate_choices, part of `make test`).
lint: setup
	.venv/bin/ruff check dimr workflow tests tools benchmarks
