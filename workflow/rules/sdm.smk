rule train_sdm:
    """All species jointly: residual MLP on standardised climate, spatial-block early stopping, held-out metrics."""
    input:
        cube="results/cubes/current.zarr",
        occurrences="results/occurrences.parquet",
    output:
        model="results/sdm/model.pt",
        metrics=report("results/sdm/metrics.json", caption="../report/sdm_metrics.rst", category="Skill"),
        split="results/sdm/split.tif",
    params:
        sdm=config["sdm"],
    threads: workflow.cores
    resources:
        mem_mb=resource_mb("train_sdm"),
        runtime=resource_minutes("train_sdm"),
    conda:
        "../envs/sdm.yaml"
    log:
        "logs/train_sdm.log",
    benchmark:
        "logs/benchmarks/train_sdm.tsv",
    script:
        "../scripts/train_sdm.py"


rule predict:
    """Suitability and presence of every species on the grid of one scenario (Dask, chunk by chunk); with the
    average_k assemblage a future scenario applies the present's threshold, read from the present's store."""
    input:
        unpack(predict_inputs),
    output:
        directory("results/predictions/{scenario}.zarr"),
    params:
        prediction=config["prediction"],
        device=config["sdm"]["device"],
    threads: resource_threads("predict")
    resources:
        mem_mb=resource_mb("predict"),
        runtime=resource_minutes("predict"),
    conda:
        "../envs/sdm.yaml"
    log:
        "logs/predict/{scenario}.log",
    benchmark:
        "logs/benchmarks/predict/{scenario}.tsv",
    script:
        "../scripts/predict.py"


if SHARED_AVERAGE_K:

    rule average_k_threshold:
        """Fused average-K: the single code threshold, chosen on the present (the only scenario asked for) from one
        model forward over its grid, read by every pass over every scenario (range sums, indicators, the explorer)
        instead of each streaming over the grid for it again."""
        input:
            model="results/sdm/model.pt",
            cube="results/cubes/{scenario}.zarr",
        output:
            "results/sdm/average_k/{scenario}.json",
        params:
            prediction=config["prediction"],
            device=config["sdm"]["device"],
        threads: resource_threads("predict")
        resources:
            mem_mb=resource_mb("predict"),
            runtime=resource_minutes("predict"),
        conda:
            "../envs/sdm.yaml"
        log:
            "logs/average_k_threshold/{scenario}.log",
        benchmark:
            "logs/benchmarks/average_k_threshold/{scenario}.tsv",
        script:
            "../scripts/average_k_threshold.py"
