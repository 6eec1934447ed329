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
        dir="work/fidnet",
        name="fmnist",
        options=fidnet_options(),
    threads: 2
    resources:
        **launch_resources(gpus=0, runtime=60),
    shell:
        launch("fidnet", "{DIMR} fidnet {params.dir} {params.options}")


rule reference:
    input:
        weights=FIDNET,
    output:
        "work/reference/fashion-mnist-{split}.npz",
    log:
        "logs/prepare/reference-{split}.log",
    params:
        dir="work/reference",
        name="fmnist-{split}",
    threads: 2
    resources:
        **launch_resources(gpus=0, runtime=60),
    shell:
        launch("reference-{wildcards.split}", "{DIMR} reference {output} --data fashion-mnist --split {wildcards.split}"
        " --extractor-weights {input.weights}")
