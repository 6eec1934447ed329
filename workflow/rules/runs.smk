# One run = one (study, scale, variant, seed): config.json -> network-final.pt -> samples.npz -> metrics.json.
# Training checkpoints are not declared outputs: Snakemake deletes the outputs of a failed job, and a
# pre-empted or failed run must keep them to resume (submitit and Snakemake both delete on failure).
# Beside the runs, each study has reference rows scored by the same protocol at the same N
# (runs/{study}/{scale}/_reference/{kind}): real test images and uniform noise, the scale of its table.


rule run_config:
    output:
        "runs/{study}/{scale}/{variant}/seed{seed}/config.json",
    log:
        "runs/{study}/{scale}/{variant}/seed{seed}/logs/config.log",
    params:
        spec=run_spec,  # a changed spec rewrites config.json, and so reruns the run
        external=external_paths,
    localrule: True
    script:
        "../scripts/write_config.py"


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


rule train:
    input:
        "runs/{study}/{scale}/{variant}/seed{seed}/config.json",
    output:
        "runs/{study}/{scale}/{variant}/seed{seed}/network-final.pt",
    log:
        "runs/{study}/{scale}/{variant}/seed{seed}/logs/train.log",
    params:
        dir=run_dir,
        name="{study}-{variant}-s{seed}",
    threads: 1
    resources:
        **launch_resources(gpus=1, runtime=60),
    shell:
        launch("train", "train {params.dir}")


rule sample:
    input:
        "runs/{study}/{scale}/{variant}/seed{seed}/network-final.pt",
    output:
        samples="runs/{study}/{scale}/{variant}/seed{seed}/samples.npz",
        grid="runs/{study}/{scale}/{variant}/seed{seed}/grid.png",
    log:
        "runs/{study}/{scale}/{variant}/seed{seed}/logs/sample.log",
    params:
        dir=run_dir,
        name="{study}-{variant}-s{seed}",
    threads: 1
    resources:
        **launch_resources(gpus=1, runtime=60),
    shell:
        launch("sample", "sample {params.dir}")


rule evaluate:
    input:
        samples="runs/{study}/{scale}/{variant}/seed{seed}/samples.npz",
        prepared=prepared_inputs,
    output:
        "runs/{study}/{scale}/{variant}/seed{seed}/metrics.json",
    log:
        "runs/{study}/{scale}/{variant}/seed{seed}/logs/evaluate.log",
    params:
        dir=run_dir,
        name="{study}-{variant}-s{seed}",
    threads: 1
    resources:
        **launch_resources(gpus=1, runtime=60),
    shell:
        launch("evaluate", "evaluate {params.dir}")


rule curve:
    input:
        network="runs/{study}/{scale}/{variant}/seed{seed}/network-final.pt",
        prepared=prepared_inputs,
    output:
        "runs/{study}/{scale}/{variant}/seed{seed}/curve.json",
    log:
        "runs/{study}/{scale}/{variant}/seed{seed}/logs/curve.log",
    params:
        dir=run_dir,
        name="{study}-{variant}-s{seed}",
    threads: 1
    resources:
        **launch_resources(gpus=1, runtime=60),
    shell:
        launch("curve", "curve {params.dir}")


rule baseline:
    input:
        like=baseline_like,
    output:
        "runs/{study}/{scale}/_reference/{kind}/samples.npz",
    log:
        "runs/{study}/{scale}/_reference/{kind}/logs/baseline.log",
    params:
        dir=run_dir,
        like=lambda wildcards, input: str(Path(input.like).parent),
    localrule: True
    shell:
        "{DIMR} baseline {params.dir} --kind {wildcards.kind} --like {params.like} > {log} 2>&1"


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
        **launch_resources(gpus=1, runtime=60),
    shell:
        launch("evaluate", "evaluate {params.dir}")
