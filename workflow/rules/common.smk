# Helpers of the workflow: config, study files, run lookup and the launcher command line.

import json
import os
import re
import shlex
import signal
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from dimr import studies as study_files
from dimr.config import (
    RECIPES,
    TRAIN_SECTIONS,
    config_diff,
    deep_merge,
    eval_subset,
    load_yaml,
    sha256_json,
    train_subset,
)
from dimr.errors import ConfigError, MissingFileError
from dimr.metrics.network_eval import ID_CHARS
from dimr.run_config import eval_identity, resolve_eval_config, train_identity, without_defaults

SCRIPTS = Path(workflow.current_basedir).parent / "scripts"


def retype_command_line(given, into: dict) -> None:
    """Read `--config` values as YAML does: Snakemake reads nested ones (`'fidnet={epochs: 1}'`) and
    `null` as strings (YAML's BaseLoader), which the schema would refuse."""
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            retype_command_line(value, into[key])
        elif isinstance(value, list) and into.get(key) == value:
            into[key] = [load_yaml(v) if isinstance(v, str) else v for v in value]
        elif isinstance(value, str) and into.get(key) == value:
            into[key] = load_yaml(value)


retype_command_line(dict(workflow.config_settings.config or {}), config)  # --config only, not --configfile
validate(config, "../schemas/config.schema.json")  # fills in the default of every key

PYTHON = sys.executable  # the environment Snakemake runs in also runs the jobs (and the launcher)
DIMR = f"{PYTHON} -m dimr.cli"
LAUNCHER = f"{PYTHON} {SCRIPTS}/submit.py --executor {config['dispatch']}" + "".join(
    f" --{key.replace('_', '-')} {value}" for key, value in config["launcher"].items() if value is not None)
SCALE = config["scale"]

# Files the prepare rules build, merged under the site paths: the tiny scale's metrics use a feature
# net trained here on Fashion-MNIST at the run's data side (Inception features mean nothing on it), and
# its statistics of the train split. The feature net is side-specific: one pair per (resolution, upsample).
FMNIST_RESOLUTION = RECIPES["tiny-fmnist"]["data"]["resolution"]


def prepared_tag(resolution: int, upsample: int = 1) -> str:
    return f"{resolution}px" + (f"-up{upsample}" if upsample > 1 else "")


def prepared_paths(resolution: int, upsample: int = 1) -> tuple[str, str]:
    """(feature net, train-split statistics) of Fashion-MNIST at one side. The recipe's own side keeps
    its first paths: they are part of the identity of every evaluation made with them."""
    if (resolution, upsample) == (FMNIST_RESOLUTION, 1):
        return "work/fidnet/fidnet.pt", "work/reference/fashion-mnist-train.npz"
    tag = prepared_tag(resolution, upsample)
    return f"work/fidnet-{tag}/fidnet.pt", f"work/reference/fashion-mnist-{tag}-train.npz"


FIDNET, REFERENCE = prepared_paths(FMNIST_RESOLUTION)
PREPARED_PATTERN = re.compile(r"work/fidnet(-\d+px(-up\d+)?)?/fidnet\.pt"
                              r"|work/reference/fashion-mnist-.+\.npz")


def is_prepared(path) -> bool:
    """A file the prepare rules build (never a site path to check before training)."""
    return isinstance(path, str) and PREPARED_PATTERN.fullmatch(path) is not None


def site_of(spec: dict) -> dict:
    """Site paths under a run spec (dimr.studies.site_paths): config `site` of its recipe over, for the
    tiny recipe, the prepared feature net and statistics of its data side."""
    paths = config["site"].get(spec["recipe"], {})
    if spec["recipe"] != "tiny-fmnist":
        return paths
    data = deep_merge(RECIPES["tiny-fmnist"]["data"], spec.get("data", {}))
    k = spec.get("evaluate", {}).get("upsample", 1)  # scored at k times the side (evaluate.upsample)
    fidnet, reference = prepared_paths(data["resolution"] * k, data.get("upsample", 1) * k)
    return deep_merge({"evaluate": {"extractor_weights": fidnet, "reference": reference}}, paths)


wildcard_constraints:
    # results/<study>_summary.csv and _curves.csv are not studies of their own
    study=r"[a-z0-9](?:(?!_summary|_curves|_sweep)[a-z0-9_-])*",
    scale=r"tiny|paper",
    net=r"[a-z0-9][a-z0-9_.-]*-[0-9a-f]{12}|[a-z0-9][a-z0-9_.-]*-spec-[0-9a-f]{12}",
    ev=r"[0-9a-f]{12}|needs-data-\d+",
    variant=r"[a-z0-9][a-z0-9_.-]*",
    kind=r"real-test|uniform-noise",
    seed=r"\d+",
    split=r"train|test",
    px=r"\d+px(?:-up\d+)?",


# ---------------------------------------------------------------------------------------------
# Study files: every one is checked against the schema and every run resolved before any job runs.


def load_studies() -> dict:
    """{name: study} of every <studies_dir>/*.yaml, schema-checked."""
    folder = Path(config["studies_dir"])
    paths = sorted(folder.glob("*.yaml"))
    if not paths:
        raise ConfigError(f"no study files (*.yaml) in {folder}; set `studies_dir` in config/config.yaml")
    return {p.stem: study_files.load_study(p) for p in paths}


def resolve_runs(studies: dict) -> tuple[dict, dict]:
    """({Run: run config}, {Run: {network, cfg, spec} of its stage 1}) at the configured scale; a config
    is None where a data set is absent on this machine.

    Absent data (ImageNet away from the cluster) does not stop planning: the run's train job fails
    with the message instead (`dimr train --spec` resolves it), before any training starts. A two-stage
    run's stage-1 network is resolved first and named like every network (`network_folder`); its name is
    the run's `sample.stage1.network` (a folder next to the stage-2 network, in runs/networks/).
    """
    runs, stage1, absent = {}, {}, set()

    def resolved(fn, *args):
        try:
            return fn(*args)
        except MissingFileError as e:
            absent.add(str(e))
            return None

    for study in studies.values():
        if SCALE in study["scales"]:
            for run in study_files.runs_of(study, SCALE, config["max_seeds"]):
                name1 = cfg1 = None
                if "stage1" in study["variants"][run.variant]:
                    spec1 = study_files.stage1_spec(study, run, site_of)
                    cfg1 = resolved(study_files.resolve_stage1, study, run, site_of)
                    name1 = network_folder(cfg1, spec1)
                    stage1[run] = {"network": name1, "cfg": cfg1, "spec": spec1}
                runs[run] = cfg = resolved(study_files.resolve_run, study, run, site_of, name1)
                if cfg is not None and (cfg1 is not None or name1 is None):
                    study_files.check_stages(study, run, cfg, cfg1)
    for message in sorted(absent):
        print(f"dimr workflow: warning: {message} (runs that need it fail at their train job)",
              file=sys.stderr)
    return runs, stage1


# ---------------------------------------------------------------------------------------------
# Networks and evaluations. A run's trained network is named by its training sections (preset + sha256):
# runs with equal ones share it, across variants and studies, and the DAG has one train job per name.
# Its evaluations (sample + evaluate sections) are children with names of their own, so that a sampling
# or evaluation edit never reruns, deletes or invalidates a network.

NET_ROOT = "runs/networks"


def run_spec_of(run) -> dict:
    """The run's spec, before resolution (its name and seed included)."""
    return study_files.run_spec(STUDIES[run.study], run, site_of)


def network_folder(cfg: dict | None, spec: dict) -> str:
    """Folder name of a network: its preset and training hash; with its data absent, of its spec."""
    if cfg is None:
        spec = {k: v for k, v in spec.items() if k != "name"}
        return f"{spec['preset']}-spec-{sha256_json(spec)[:ID_CHARS]}"
    return f"{cfg['preset']}-{train_identity(cfg)[:ID_CHARS]}"


def network_name(run, cfg: dict | None) -> str:
    """Folder of the run's network; a run whose data is absent is named by its unresolved spec."""
    return network_folder(cfg, run_spec_of(run))


def training_spec(cfg: dict | None, spec: dict) -> dict:
    """What a train job writes: the training sections (with the data absent: those of the spec)."""
    if cfg is not None:
        return train_subset(cfg)
    return {k: v for k, v in spec.items() if k not in ("name", "sample", "evaluate")}


def plan_networks(runs: dict, stage1: dict) -> tuple[dict, dict, dict, dict]:
    """(networks {name: training spec}, evaluations {(network, id): sections}, per run {network, evals,
    stage1_network}, the stage-1 network of each two-stage evaluation {(network, id): name})."""
    networks, evals, per_run, eval_stage1 = {}, {}, {}, {}
    for run, cfg in runs.items():
        net = network_name(run, cfg)
        networks[net] = training_spec(cfg, run_spec_of(run))
        s1 = stage1.get(run)
        if s1 is not None:
            networks[s1["network"]] = training_spec(s1["cfg"], s1["spec"])
        items = []
        for e in study_files.evaluations(STUDIES[run.study], run.scale):
            if cfg is None:
                ev, eid = None, f"needs-data-{len(items)}"
            else:
                ev = eval_subset(cfg) if not e["point"] else resolve_eval_config(
                    cfg, study_files.unflatten(e["point"]))
                eid = eval_identity(ev)[:ID_CHARS]
            evals[(net, eid)] = ev
            if s1 is not None:
                eval_stage1[(net, eid)] = s1["network"]
            items.append({**e, "eval": eid, "dir": f"{NET_ROOT}/{net}/evals/{eid}"})
        per_run[run] = {"network": net, "network_dir": f"{NET_ROOT}/{net}", "evals": items,
                        "stage1_network": s1["network"] if s1 is not None else None}
    return networks, evals, per_run, eval_stage1


RECORD = "run.json"  # runs/<study>/<scale>/<variant>/seed<n>/run.json: the network a run was read from


def check_records(per_run: dict) -> None:
    """A run whose training settings changed after its network trained: stop, naming the keys."""
    problems = []
    for run, plan in per_run.items():
        path = Path(run.dir) / RECORD
        if not path.is_file():
            continue
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue  # rewritten by its rule
        old_dir = Path(old.get("network_dir", ""))
        trained = (old_dir / "network-final.pt").is_file() or any((old_dir / "checkpoints").glob("*.pt"))
        if old.get("network") != plan["network"] and trained:
            new = NETWORKS[plan["network"]]
            diff = config_diff(old.get("train_config", {}), new)
            if "train_config" in old and not diff:
                continue  # the same settings under an older naming of networks: nothing to decide
            problems.append(f"{run.dir}: trained as {old_dir}; the study now gives other training settings:\n    "
                            + "\n    ".join(diff or ["(unknown: the record holds no settings)"]))
    if problems:
        raise WorkflowError(
            "training settings of finished runs changed:\n  " + "\n  ".join(problems)
            + "\nNothing was deleted. To keep both, give the changed variant a new name; to train the new "
            f"settings under the same name, delete the run's {RECORD} (its old network stays in "
            f"{NET_ROOT}/).")


try:
    STUDIES = load_studies()
    RUNS, STAGE1 = resolve_runs(STUDIES)
    NETWORKS, EVALS, RUN_PLAN, EVAL_STAGE1 = plan_networks(RUNS, STAGE1)
except ConfigError as e:
    raise WorkflowError(f"invalid study or workflow config:\n{e}") from None
check_records(RUN_PLAN)


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


def main_eval(run) -> dict:
    return RUN_PLAN[run]["evals"][0]  # role "main": the run's own sample section, the tables' numbers


def eval_files_of(name: str, roles=("main",)):
    """Input function: `<evaluation dir>/<name>` of the study's runs, for evaluations of `roles`."""
    return lambda wildcards: [f"{e['dir']}/{name}" for r in study_runs(wildcards)
                              for e in RUN_PLAN[r]["evals"] if e["role"] in roles]


def network_files_of(name: str):
    """Input function: `<network dir>/<name>` of every run of the study (one per run, in run order)."""
    return lambda wildcards: [f"{RUN_PLAN[r]['network_dir']}/{name}" for r in study_runs(wildcards)]


def record_files(wildcards) -> list[str]:
    return [f"{r.dir}/{RECORD}" for r in study_runs(wildcards)]


def first_seed_runs(wildcards) -> list:
    """The lowest-seed run of each variant (the network does not depend on the seed)."""
    runs = {}
    for r in study_runs(wildcards):
        runs.setdefault(r.variant, r)
    return list(runs.values())


def first_seed_configs(wildcards) -> list[str]:
    return [f"{RUN_PLAN[r]['network_dir']}/config.json" for r in first_seed_runs(wildcards)]


# Reference rows per scale: ImageNet has no test split of ours (its real data is ADM's reference batch).
REFERENCE_KINDS = {"tiny": ["real-test", "uniform-noise"], "paper": ["uniform-noise"]}
REFERENCE_LABELS = {"real-test": "Real test images", "uniform-noise": "Uniform noise"}


def baseline_like(wildcards) -> str:
    """JSON spec of the study's first run: a reference row copies its data, sample and evaluate sections
    (`dimr baseline` resolves it; with the data set absent it fails there, naming the missing file)."""
    return json.dumps(run_spec_of(study_runs(wildcards)[0]), sort_keys=True)


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
    """Per run of a study: variant, seed, network and evaluations (aggregate's `params`)."""
    return [{"variant": r.variant, "seed": r.seed, "record": f"{r.dir}/{RECORD}", **RUN_PLAN[r]}
            for r in study_runs(wildcards)]


def sweep_meta(wildcards) -> dict:
    """The study's sweep at this scale: swept keys and the selection rule (None without one)."""
    body = study_of(wildcards)["scales"][SCALE]
    select = body.get("select")
    if select:
        select = {"key": select["key"], "seed_start": select.get("seed_start", study_files.SELECT_SEED_START)}
    return {"keys": list(body.get("sweep", {})), "select": select}


def study_meta(wildcards) -> dict:
    """Study title, source of the paper's numbers and row metadata (labels, order, paper figures)."""
    s = study_of(wildcards)
    return {"study": s["name"], "scale": SCALE, "title": s["title"], "paper_source": s.get("paper_source", ""),
            "variants": study_files.variant_table(s), "contrasts": s.get("contrasts", {})}


def network_of(wildcards) -> str:
    if wildcards.net not in NETWORKS:
        raise WorkflowError(f"{NET_ROOT}/{wildcards.net} is not the network of any run of the studies at "
                            f"scale {SCALE!r}; `snakemake -n` lists the planned ones")
    return wildcards.net


def network_spec(wildcards) -> str:
    """The train command's spec argument, the network's training sections as JSON: the train job writes config.json from them itself, so
    that no upstream job can ever make Snakemake rerun (and delete) a trained network. Fields at their
    dataclass defaults are left out, as in the network's name: a version that adds a field does not
    change the rule's params, so Snakemake's params trigger cannot ask to retrain either."""
    net = network_of(wildcards)
    if "-spec-" in net:  # data absent here: the unresolved spec, whose train job stops at the data check
        return f"--spec {shlex.quote(json.dumps(NETWORKS[net], sort_keys=True))}"
    free = without_defaults(NETWORKS[net], TRAIN_SECTIONS)
    return f"--spec-sections {shlex.quote(json.dumps(free, sort_keys=True))}"


def network_requires(wildcards) -> str:
    """Site paths that the network's evaluations read and no job builds; checked before training starts."""
    net = network_of(wildcards)
    paths = sorted({v for (n, _), ev in EVALS.items() if n == net and ev
                    for section in ev.values() for v in section.values()
                    if isinstance(v, str) and "/" in v and not is_prepared(v)})
    return " ".join(f"--require {p}" for p in paths)


def eval_spec(wildcards) -> str:
    """One evaluation's sample and evaluate sections as JSON (its folder is named by their hash)."""
    key = (network_of(wildcards), wildcards.ev)
    if key not in EVALS:
        raise WorkflowError(f"{NET_ROOT}/{key[0]}/evals/{key[1]} is not a planned evaluation")
    # None: the run's data set is absent here, and its train job (upstream) fails first with the message
    return json.dumps(EVALS[key] or {}, sort_keys=True)


def eval_prepared(wildcards) -> list[str]:
    """Prepared files (feature net, reference statistics) one evaluation reads."""
    return prepared_files(EVALS.get((wildcards.net, wildcards.ev)))


def eval_stage1(wildcards) -> list[str]:
    """A two-stage evaluation's stage-1 network file (none for a single-stage one)."""
    net = EVAL_STAGE1.get((wildcards.net, wildcards.ev))
    return [f"{NET_ROOT}/{net}/network-final.pt"] if net else []


def record_of(wildcards) -> str:
    """run.json of a run: the network it was read from and that network's training settings."""
    run = run_of(wildcards)
    plan = RUN_PLAN[run]
    return json.dumps({"network": plan["network"], "network_dir": plan["network_dir"],
                       "train_config": NETWORKS[plan["network"]], "evals": plan["evals"]}, sort_keys=True)


def prepared_files(cfg: dict | None) -> list[str]:
    """Paths in a run config's evaluate section that the prepare stage builds; cfg is None for absent data."""
    values = (cfg or {}).get("evaluate", {}).values()
    return sorted({v for v in values if is_prepared(v)})


def all_targets() -> list[str]:
    """Tables and figures of every study in config `studies`."""
    missing = sorted(set(config["studies"]) - set(STUDIES))
    if missing:
        raise WorkflowError(f"config `studies` names {missing}, which have no file in {config['studies_dir']}/; "
                            f"studies: {sorted(STUDIES)}")
    return [f for s in config["studies"] for f in study_outputs(s)]


FIGURES = ("fid_bars", "fid_vs_gmacs", "fid_curve", "samples")  # workflow/scripts/figures.py


def study_outputs(study: str) -> list[str]:
    out = [f"results/{study}{ext}" for ext in (".csv", ".md", ".tex", "_summary.csv", "_curves.csv")] + [
        f"reports/{study}/{fig}.png" for fig in FIGURES]
    if STUDIES[study]["scales"].get(SCALE, {}).get("sweep"):
        out += [f"results/{study}_sweep.md", f"results/{study}_sweep.csv",
                f"reports/{study}/fid_vs_nfe.png", f"reports/{study}/fid_vs_guidance.png"]
    return out


# ---------------------------------------------------------------------------------------------
# Dispatch: compute jobs go through workflow/scripts/submit.py (submitit), which waits for them.


# Each launcher leaves its PID here (submit.py, DIMR_LAUNCHERS). A signal to Snakemake's own PID reaches
# no job (Ctrl-C reaches them through the process group): SIGINT and SIGTERM are passed on to every
# launcher, which cancels its job; then Snakemake stops as it would have (SIGTERM: after those jobs end).
LAUNCHERS = Path(".snakemake/dimr-launchers").resolve()
os.environ.update(DIMR_LAUNCHERS=str(LAUNCHERS))  # set here for the launchers, not read


def stop_launchers(signum, frame, previous):
    """Send SIGTERM to each launcher of this run that still lives in the process group it recorded."""
    for entry in LAUNCHERS.glob("[0-9]*"):
        try:
            if os.getpgid(int(entry.name)) == int(entry.read_text()):  # not a recycled PID
                os.kill(int(entry.name), signal.SIGTERM)
        except (OSError, ValueError):
            pass
    if callable(previous):
        previous(signum, frame)
    elif signum == signal.SIGINT:
        raise KeyboardInterrupt


def forward_stop_signals():
    """Called on start (after Snakemake's scheduler has set its own handlers, which are chained)."""
    for entry in LAUNCHERS.glob("[0-9]*"):  # left by a killed run; the workdir lock makes them stale
        entry.unlink(missing_ok=True)
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(signum)
        signal.signal(signum, lambda s, f, previous=previous: stop_launchers(s, f, previous))


onstart:
    forward_stop_signals()


def run_dir(wildcards, output) -> str:
    """Params `dir`: the folder of the job's first output (its run directory, or work/<stage>)."""
    return str(Path(output[0]).parent)


def launch_resources(rule: str, gpus=1, runtime=60, mem_mb=8000):
    """Placement of a launched job: these defaults < config `resources.default` < `resources.<rule>`.

    In config, not in the profile's `set-resources`, so that a `--set-resources RULE:KEY=VALUE` on the
    command line changes that one key (it would replace the profile's whole block). Never the study.
    """
    placed = dict(gpus=gpus, nodes=1, cpus_per_task=lambda wildcards, threads: threads, mem_mb=mem_mb,
                  runtime=runtime, slurm_partition="", slurm_account="")
    return {**placed, **config["resources"].get("default", {}), **config["resources"].get(rule, {})}


def profile_in_use() -> str:
    """The profile Snakemake was started with ('' if none): profiles exist only on its command line."""
    argv = sys.argv
    for i, arg in enumerate(argv):
        if arg == "--profile" and i + 1 < len(argv):
            return Path(argv[i + 1]).name
        if arg.startswith("--profile="):
            return Path(arg.split("=", 1)[1]).name
    return Path(os.environ.get("SNAKEMAKE_PROFILE", "")).name


if profile_in_use() == "slurm" and config["dispatch"] != "slurm":
    raise WorkflowError(
        "--profile slurm but dispatch is local: a --configfile replaced the profile's config/slurm.yaml. "
        "Name it too (--configfile config/slurm.yaml YOURS.yaml) or add --config dispatch=slurm; "
        "nothing is run on this host instead of the cluster.")


def dry_run_requested() -> bool:
    """`snakemake -n` (or `-np`, `--dry-run`) on the command line: a dry run runs no `onstart` handler."""
    return any(arg in ("--dry-run", "--dryrun") or re.fullmatch(r"-[A-Za-z]*n[A-Za-z]*", arg) is not None
               for arg in sys.argv[1:])


if SCALE == "paper" and config["dispatch"] == "slurm" and dry_run_requested():
    # GPU-hours of what the cluster dry run plans, placed as its train jobs are (dimr estimate, dimr
    # plan); a memory plan per network takes a few seconds, so a local dry run does not wait for it.
    from dimr import estimate

    train = launch_resources("train", gpus=1, runtime=60)
    placement = estimate.Placement(gpus=int(train["gpus"]) * int(train["nodes"]),
                                   time_limit_min=float(train["runtime"]))
    # the studies of the targets on the command line (results/<study>.csv, ...), else config `studies`
    named = {m.group(1) for a in sys.argv[1:] if (m := re.match(r"results/([a-z0-9-]+?)(_|\.|$)", a))}
    shown = named or set(config["studies"])
    print(estimate.dry_run_table({(r.study, r.variant, r.seed): run_spec_of(r) for r in RUNS
                                  if r.study in shown}, placement=placement), file=sys.stderr)


def launch(stage: str, command: str) -> str:
    """Shell command: submit `dimr <command>` under `config[dispatch]`, wait for it, log to {log}.

    The job folder and the record of the stage's job id live in {params.dir} (the run directory): a
    rerun re-attaches to a job that is still running instead of submitting it twice.
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


def parse_prepared_tag(tag: str) -> tuple[int, int]:
    """'32px' -> (32, 1), '64px-up2' -> (64, 2): the side of a prepared feature net (`prepared_tag`)."""
    m = re.fullmatch(r"(\d+)px(?:-up(\d+))?", tag)
    return int(m.group(1)), int(m.group(2) or 1)


def fidnet_options(resolution: int = FMNIST_RESOLUTION, upsample: int = 1) -> str:
    """Command-line options of `dimr fidnet` from config `fidnet` (they change the metrics)."""
    opts = {**config["fidnet"], "resolution": resolution}  # defaults filled in by the schema
    if upsample > 1:
        opts["upsample"] = upsample
    return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in opts.items() if v is not None)


def reference_side_options(tag: str) -> str:
    """`dimr reference` options of a prepared side: --resolution (and --upsample)."""
    resolution, upsample = parse_prepared_tag(tag)
    return f"--resolution {resolution}" + (f" --upsample {upsample}" if upsample > 1 else "")
