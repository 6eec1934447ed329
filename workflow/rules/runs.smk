# Networks and their evaluations (names and planning: common.smk).
#   runs/networks/<preset>-<hash of the training sections>/      config.json, network-final.pt, snapshots/
#   runs/networks/<network>/evals/<hash of sample + evaluate>/  eval.json, metrics.json, grid.png, curve.json
#   runs/<study>/<scale>/<variant>/seed<n>/run.json             the network and evaluations a run is read from
# A train job has no input file: it writes its config.json from its params itself, so a rerun of another
# job can never make Snakemake rerun (and so delete) a trained network; its params are the network's
# identity, equal by construction for an existing folder. Training checkpoints are not declared outputs:
# Snakemake deletes the outputs of a failed job, and a pre-empted or failed run must keep them to resume.
# Each study also has reference rows scored by the same protocol at the same N
# (runs/{study}/{scale}/_reference/{kind}): real test images and uniform noise, the scale of its table.
# A two-stage evaluation (cascade, Relay Diffusion) also reads its stage-1 network (`eval_stage1`), named
# by planning and trained by the same train rule as every network.


rule train:
    output:
        network=f"{NET_ROOT}/{{net}}/network-final.pt",
        config=f"{NET_ROOT}/{{net}}/config.json",
    log:
        f"{NET_ROOT}/{{net}}/logs/train.log",
    params:
        dir=run_dir,
        name="{net}",
        spec=network_spec,
        requires=network_requires,
    threads: 1
    resources:
        **launch_resources("train", gpus=1, runtime=60),
    shell:
        launch("train", "train {params.dir} {params.spec} {params.requires}")


rule evaluate:
    input:
        network=f"{NET_ROOT}/{{net}}/network-final.pt",
        stage1=eval_stage1,
        prepared=eval_prepared,
    output:
        metrics=f"{NET_ROOT}/{{net}}/evals/{{ev}}/metrics.json",
        grid=f"{NET_ROOT}/{{net}}/evals/{{ev}}/grid.png",
    log:
        f"{NET_ROOT}/{{net}}/evals/{{ev}}/logs/evaluate.log",
    params:
        dir=run_dir,
        net=lambda wildcards: f"{NET_ROOT}/{wildcards.net}",
        name="{net}-{ev}",
        spec=eval_spec,
    threads: 1
    resources:
        **launch_resources("evaluate", gpus=1, runtime=60),
    shell:
        launch("evaluate", "eval {params.net} --spec {params.spec:q} --out {params.dir}")


rule curve:
    input:
        network=f"{NET_ROOT}/{{net}}/network-final.pt",
        stage1=eval_stage1,
        prepared=eval_prepared,
    output:
        f"{NET_ROOT}/{{net}}/evals/{{ev}}/curve.json",
    log:
        f"{NET_ROOT}/{{net}}/evals/{{ev}}/logs/curve.log",
    params:
        dir=run_dir,
        net=lambda wildcards: f"{NET_ROOT}/{wildcards.net}",
        name="{net}-{ev}",
        spec=eval_spec,
    threads: 1
    resources:
        **launch_resources("curve", gpus=1, runtime=60),
    shell:
        launch("curve", "eval {params.net} --spec {params.spec:q} --out {params.dir} --curve")


rule run_record:
    input:
        lambda wildcards: f"{RUN_PLAN[run_of(wildcards)]['network_dir']}/network-final.pt",
    output:
        "runs/{study}/{scale}/{variant}/seed{seed}/run.json",
    log:
        "runs/{study}/{scale}/{variant}/seed{seed}/logs/run_record.log",
    params:
        record=record_of,
    localrule: True
    script:
        "../scripts/write_record.py"


rule model_info:
    input:
        first_seed_configs,
    output:
        "runs/{study}/{scale}/model_info.json",
    log:
        "logs/results/{study}-{scale}.model_info.log",
    params:
        variants=lambda wildcards: [r.variant for r in first_seed_runs(wildcards)],
    localrule: True
    script:
        "../scripts/model_info.py"


rule baseline:
    output:
        "runs/{study}/{scale}/_reference/{kind}/samples.npz",
    log:
        "runs/{study}/{scale}/_reference/{kind}/logs/baseline.log",
    params:
        dir=run_dir,
        like=baseline_like,
    localrule: True
    shell:
        "{DIMR} baseline {params.dir} --kind {wildcards.kind} --like {params.like:q} > {log} 2>&1"


rule evaluate_baseline:
    input:
        samples="runs/{study}/{scale}/_reference/{kind}/samples.npz",
        prepared=baseline_prepared,
    output:
        "runs/{study}/{scale}/_reference/{kind}/metrics.json",
    log:
        "runs/{study}/{scale}/_reference/{kind}/logs/evaluate.log",
    params:
        dir=run_dir,
        name="{study}-{kind}",
    threads: 1
    resources:
        **launch_resources("evaluate_baseline", gpus=1, runtime=60),
    shell:
        launch("evaluate", "evaluate {params.dir}")
