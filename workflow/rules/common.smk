# Helpers of the workflow: config, study files, run lookup and the launcher command line.

import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from dimr.config import RECIPES, deep_merge
from dimr.errors import ConfigError, MissingFileError

SCRIPTS = Path(workflow.current_basedir).parent / "scripts"
sys.path.insert(0, str(SCRIPTS))
import studies as study_files  # noqa: E402  (workflow/scripts/studies.py)


validate(config, "../schemas/config.schema.json")  # fills in the default of every key

PYTHON = sys.executable  # the environment Snakemake runs in also runs the jobs (and the launcher)
DIMR = f"{PYTHON} -m dimr.cli"
LAUNCHER = f"{PYTHON} {SCRIPTS}/submit.py --executor {config['dispatch']}"
SCALE = config["scale"]

# Files the prepare rules build, merged under the site paths: the tiny scale's metrics use a feature
# net trained here on Fashion-MNIST (SPEC §5: Inception features mean nothing on it).
FIDNET = "work/fidnet/fidnet.pt"
REFERENCE = "work/reference/fashion-mnist-train.npz"
PREPARED_SITE = {"tiny-fmnist": {"evaluate": {"extractor_weights": FIDNET, "reference": REFERENCE}}}
PREPARED_FILES = {FIDNET, REFERENCE}
SITE = deep_merge(PREPARED_SITE, config["site"])


wildcard_constraints:
    # results/<study>_summary.csv and _curves.csv are not studies of their own
    study=r"[a-z0-9](?:(?!_summary|_curves)[a-z0-9_-])*",
    scale=r"tiny|paper",
    variant=r"[a-z0-9][a-z0-9_.-]*",
    kind=r"real-test|uniform-noise",
    seed=r"\d+",


# ---------------------------------------------------------------------------------------------
# Study files: every one is checked against the schema and every run resolved before any job runs.


def load_studies() -> dict:
    """{name: study} of every <studies_dir>/*.yaml, schema-checked."""
    folder = Path(config["studies_dir"])
    paths = sorted(folder.glob("*.yaml"))
    if not paths:
        raise ConfigError(f"no study files (*.yaml) in {folder}; set `studies_dir` in config/config.yaml")
    return {p.stem: study_files.load_study(p) for p in paths}


def resolve_runs(studies: dict) -> dict:
    """{Run: run config} at the configured scale; None where a data set is absent on this machine.

    Absent data (ImageNet away from the cluster) does not stop planning: the run's config job fails
    with the message instead (workflow/scripts/write_config.py), before any training starts.
    """
    runs, absent = {}, set()
    for study in studies.values():
        if SCALE in study["scales"]:
            for run in study_files.runs_of(study, SCALE, config["max_seeds"]):
                try:
                    runs[run] = study_files.resolve_run(study, run, SITE)
                except MissingFileError as e:
                    runs[run] = None
                    absent.add(str(e))
    for message in sorted(absent):
        print(f"dimr workflow: warning: {message} (runs that need it fail at their run_config job)",
              file=sys.stderr)
    return runs


try:
    STUDIES = load_studies()
    RUNS = resolve_runs(STUDIES)
except ConfigError as e:
    raise WorkflowError(f"invalid study or workflow config:\n{e}") from None


def run_of(wildcards) -> "study_files.Run":
    """The Run named by a job's wildcards; an error lists the study's runs when there is none."""
    run = study_files.Run(wildcards.study, wildcards.scale, wildcards.variant, int(wildcards.seed))
    if run not in RUNS:
        known = sorted(r.dir for r in RUNS if r.study == run.study and r.scale == run.scale)
        raise WorkflowError(f"{run.dir} is not a run of the studies at scale {SCALE!r}; known: {known}")
    return run


def study_of(wildcards) -> dict:
    if wildcards.study not in STUDIES:
        raise WorkflowError(f"no study file {config['studies_dir']}/{wildcards.study}.yaml; "
                            f"studies: {sorted(STUDIES)}")
    if SCALE not in STUDIES[wildcards.study]["scales"]:
        raise WorkflowError(f"study {wildcards.study} has no scale {SCALE!r} (config `scale`)")
    return STUDIES[wildcards.study]


def study_runs(wildcards) -> list:
    """Runs of the study at the configured scale (a model_info job names its scale: it must match)."""
    if getattr(wildcards, "scale", SCALE) != SCALE:
        raise WorkflowError(f"runs/{wildcards.study}/{wildcards.scale}/...: the workflow config's scale is {SCALE!r}")
    return [r for r in RUNS if r.study == study_of(wildcards)["name"]]


def study_files_of(name: str):
    """Input function: `<run dir>/<name>` of every run of the study at the configured scale."""
    return lambda wildcards: [f"{r.dir}/{name}" for r in study_runs(wildcards)]


def first_seed_runs(wildcards) -> list:
    """The lowest-seed run of each variant (the network does not depend on the seed)."""
    runs = {}
    for r in study_runs(wildcards):
        runs.setdefault(r.variant, r)
    return list(runs.values())


def first_seed_configs(wildcards) -> list[str]:
    return [f"{r.dir}/config.json" for r in first_seed_runs(wildcards)]


# Reference rows per scale: ImageNet has no test split of ours (its real data is ADM's reference batch).
REFERENCE_KINDS = {"tiny": ["real-test", "uniform-noise"], "paper": ["uniform-noise"]}
REFERENCE_LABELS = {"real-test": "Real test images", "uniform-noise": "Uniform noise"}


def baseline_like(wildcards) -> str:
    """The config of the study's first run: a reference row copies its data, sample and evaluate sections."""
    return f"{study_runs(wildcards)[0].dir}/config.json"


def baseline_prepared(wildcards) -> list[str]:
    """Prepared files the reference rows' evaluation needs: those of the study's first run."""
    return prepared_files(RUNS[study_runs(wildcards)[0]])


def reference_dirs(wildcards) -> list[str]:
    """Reference-row folders of a study; real test images only where the data set has a test split."""
    cfg = RUNS[study_runs(wildcards)[0]]
    fmnist = cfg is None or cfg["data"]["type"] == "fashion-mnist"
    kinds = [k for k in REFERENCE_KINDS[SCALE] if fmnist or k != "real-test"]
    return [f"runs/{wildcards.study}/{SCALE}/_reference/{kind}" for kind in kinds]


def reference_meta(wildcards) -> list[dict]:
    """Aggregate's `references`: kind, label and folder of each reference row."""
    return [{"kind": Path(d).name, "label": REFERENCE_LABELS[Path(d).name], "run_dir": d}
            for d in reference_dirs(wildcards)]


def reference_metrics(wildcards) -> list[str]:
    return [f"{d}/metrics.json" for d in reference_dirs(wildcards)]


def run_meta(wildcards) -> list[dict]:
    """Per run of a study: variant, seed, run directory (aggregate's `params`)."""
    return [{"variant": r.variant, "seed": r.seed, "run_dir": r.dir} for r in study_runs(wildcards)]


def study_meta(wildcards) -> dict:
    """Study title, source of the paper's numbers and row metadata (labels, order, paper figures)."""
    s = study_of(wildcards)
    return {"study": s["name"], "scale": SCALE, "title": s["title"], "paper_source": s.get("paper_source", ""),
            "variants": study_files.variant_table(s)}


def run_spec(wildcards) -> dict:
    """The run's spec, before resolution: a change to it rewrites config.json (Snakemake's params trigger)."""
    run = run_of(wildcards)
    return study_files.run_spec(STUDIES[run.study], run, SITE)


def external_paths(wildcards) -> list[str]:
    """Site paths of the run's recipe that no rule builds (checked by the run's config job)."""
    spec = run_spec(wildcards)
    site = config["site"].get(spec["recipe"], {})
    return sorted({v for section in site.values() for v in section.values()
                   if isinstance(v, str) and v not in PREPARED_FILES})


def prepared_inputs(wildcards) -> list[str]:
    """Files of the run's evaluate section that a prepare rule builds (feature net, reference statistics)."""
    return prepared_files(RUNS[run_of(wildcards)])


def prepared_files(cfg: dict | None) -> list[str]:
    """Paths in a run config's evaluate section that the prepare stage builds; cfg is None for absent data."""
    values = (cfg or {}).get("evaluate", {}).values()
    return sorted({v for v in values if isinstance(v, str) and v in PREPARED_FILES})


def all_targets() -> list[str]:
    """Tables and figures of every study in config `studies`."""
    missing = sorted(set(config["studies"]) - set(STUDIES))
    if missing:
        raise WorkflowError(f"config `studies` names {missing}, which have no file in {config['studies_dir']}/; "
                            f"studies: {sorted(STUDIES)}")
    return [f for s in config["studies"] for f in study_outputs(s)]


FIGURES = ("fid_bars", "fid_vs_gmacs", "fid_curve", "samples")  # workflow/scripts/figures.py


def study_outputs(study: str) -> list[str]:
    return [f"results/{study}{ext}" for ext in (".csv", ".md", ".tex", "_summary.csv", "_curves.csv")] + [
        f"reports/{study}/{fig}.png" for fig in FIGURES]


# ---------------------------------------------------------------------------------------------
# Dispatch: compute jobs go through workflow/scripts/submit.py (submitit), which waits for them.


def run_dir(wildcards, output) -> str:
    """Params `dir`: the folder of the job's first output (its run directory, or work/<stage>)."""
    return str(Path(output[0]).parent)


def launch_resources(gpus=1, runtime=60, mem_mb=8000):
    """Defaults of a launched job; profiles and --set-resources override each (never the study)."""
    return dict(gpus=gpus, nodes=1, cpus_per_task=lambda wildcards, threads: threads, mem_mb=mem_mb,
                runtime=runtime, slurm_partition="", slurm_account="")


def launch(stage: str, command: str) -> str:
    """Shell command: submit `dimr <command>` under `config[dispatch]`, wait for it, log to {log}.

    The job folder and the record of the stage's job id live in {params.dir} (the run directory): a
    rerun re-attaches to a job that is still running instead of submitting it twice (SPEC §6).
    """
    # The shell text is provenance (Snakemake's `code` rerun trigger), and so are params: placement
    # (interpreter, dispatch, resources) stays in {placeholders}, so that moving a job to SLURM or the
    # repository to another path reruns nothing.
    return (
        f"{{LAUNCHER}} --folder {{params.dir}}/submitit --job-record {{params.dir}}/job-{stage}.json"
        " --expect {output}"
        f" --name dimr-{stage}-{{params.name}}"
        " --timeout-min {resources.runtime} --nodes {resources.nodes} --gpus-per-node {resources.gpus}"
        " --cpus-per-task {resources.cpus_per_task} --mem-gb $(( ({resources.mem_mb} + 999) / 1000 ))"
        " --partition '{resources.slurm_partition}' --account '{resources.slurm_account}'"
        f" -- {{DIMR}} {command} > {{log}} 2>&1"
    )


# The feature net and its statistics see the tiny recipe's images (Fashion-MNIST at its data.resolution).
FMNIST_RESOLUTION = RECIPES["tiny-fmnist"]["data"]["resolution"]


def fidnet_options() -> str:
    """Command-line options of `dimr fidnet` from config `fidnet` (they change the metrics)."""
    opts = {**config["fidnet"], "resolution": FMNIST_RESOLUTION}  # defaults filled in by the schema
    return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in opts.items() if v is not None)
