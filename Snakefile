# DiMR ablation harness: study files -> run configs -> train -> sample -> evaluate -> tables, figures, report.
# `snakemake --cores 2` builds the studies of config/config.yaml (the tiny table1 by default);
# `snakemake --profile slurm results/table1.csv` runs the paper-scale study on a SLURM cluster.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/runs.smk"
include: "workflow/rules/results.smk"


rule all:
    input:
        all_targets(),
    default_target: True
