# What the metrics compare against: the Fashion-MNIST feature net and its reference statistics (tiny
# scale). Paper-scale references (ADM's reference batches, Inception weights) are site paths in the
# workflow config, checked before a real run starts.


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
