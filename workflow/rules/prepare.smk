# What the metrics compare against: the Fashion-MNIST feature net and its reference statistics (tiny
# scale), per data side: the recipe's 16 px under work/fidnet/ and work/reference/fashion-mnist-*.npz,
# any other side (a 32-px stage 2, a 64-px upsampled study) under work/fidnet-<side>/ and
# work/reference/fashion-mnist-<side>-*.npz (`prepared_paths`). Paper-scale references (ADM's reference
# batches, Inception weights) are site paths in the workflow config, checked before a real run starts.


rule fidnet:
    output:
        weights=FIDNET,
        info="work/fidnet/fidnet.json",
    log:
        "logs/prepare/fidnet.log",
    params:
        dir=run_dir,
        name="fmnist",
        options=fidnet_options(),
    threads: 1
    resources:
        **launch_resources("fidnet", gpus=0, runtime=60),
    shell:
        launch("fidnet", "fidnet {params.dir} {params.options}")


rule reference:
    input:
        weights=FIDNET,
    output:
        "work/reference/fashion-mnist-{split}.npz",
    log:
        "logs/prepare/reference-{split}.log",
    params:
        dir=run_dir,
        name="fmnist",
    threads: 1
    resources:
        **launch_resources("reference", gpus=0, runtime=60),
    shell:
        launch("reference-{wildcards.split}", "reference {output} --data fashion-mnist --split {wildcards.split}"
        f" --extractor-weights {{input.weights}} --resolution {FMNIST_RESOLUTION}")


rule fidnet_at_side:
    output:
        weights="work/fidnet-{px}/fidnet.pt",
        info="work/fidnet-{px}/fidnet.json",
    log:
        "logs/prepare/fidnet-{px}.log",
    params:
        dir=run_dir,
        name="fmnist-{px}",
        options=lambda wildcards: fidnet_options(*parse_prepared_tag(wildcards.px)),
    threads: 1
    resources:
        **launch_resources("fidnet", gpus=0, runtime=60),
    shell:
        launch("fidnet", "fidnet {params.dir} {params.options}")


rule reference_at_side:
    input:
        weights="work/fidnet-{px}/fidnet.pt",
    output:
        "work/reference/fashion-mnist-{px}-{split}.npz",
    log:
        "logs/prepare/reference-{px}-{split}.log",
    params:
        dir=run_dir,
        name="fmnist-{px}",
        side=lambda wildcards: reference_side_options(wildcards.px),
    threads: 1
    resources:
        **launch_resources("reference", gpus=0, runtime=60),
    shell:
        launch("reference-{wildcards.px}-{wildcards.split}", "reference {output} --data fashion-mnist"
        " --split {wildcards.split} --extractor-weights {input.weights} {params.side}")
