# One run = one (study, scale, variant, seed): config.json -> network-final.pt -> samples.npz -> metrics.json.
# Training checkpoints are not declared outputs: Snakemake deletes the outputs of a failed job, and a
# pre-empted or failed run must keep them to resume (SPEC §6).

RUN = "runs/{study}/{scale}/{variant}/seed{seed}"


rule run_config:
    output:
        RUN + "/config.json",
    log:
        RUN + "/logs/config.log",
    params:
        spec=run_spec,  # a changed spec rewrites config.json, and so reruns the run
    localrule: True
    run:
        write_config(wildcards, output[0], log[0])


rule model_info:
    input:
        RUN + "/config.json",
    output:
        RUN + "/model_info.json",
    log:
        RUN + "/logs/model_info.log",
    localrule: True
    shell:
        "{DIMR} info --config {input} --json > {output} 2> {log}"


rule train:
    input:
        RUN + "/config.json",
    output:
        RUN + "/network-final.pt",
    log:
        RUN + "/logs/train.log",
    params:
        dir=RUN,
        name="{study}-{variant}-s{seed}",
    threads: 2
    resources:
        **launch_resources(gpus=1, runtime=60),
    shell:
        launch("train", "{DIMR} train {params.dir}")


rule sample:
    input:
        RUN + "/network-final.pt",
    output:
        samples=RUN + "/samples.npz",
        grid=RUN + "/grid.png",
    log:
        RUN + "/logs/sample.log",
    params:
        dir=RUN,
        name="{study}-{variant}-s{seed}",
    threads: 2
    resources:
        **launch_resources(gpus=1, runtime=60),
    shell:
        launch("sample", "{DIMR} sample {params.dir}")


rule evaluate:
    input:
        samples=RUN + "/samples.npz",
        prepared=prepared_inputs,
    output:
        RUN + "/metrics.json",
    log:
        RUN + "/logs/evaluate.log",
    params:
        dir=RUN,
        name="{study}-{variant}-s{seed}",
    threads: 2
    resources:
        **launch_resources(gpus=1, runtime=60),
    shell:
        launch("evaluate", "{DIMR} evaluate {params.dir}")
