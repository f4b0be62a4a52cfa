def indicator_inputs(wildcards):
    inputs = run_predictions(wildcards)
    if HAS_REDLIST:
        inputs |= {"status": f"results/iucn/status/{wildcards.run}.csv",
                   "current_status": "results/iucn/status/current_none.csv"}
    return inputs


rule indicators:
    """Per-cell indicators of one run (richness, threatened count and share, most threatened status, change) and
    the MESS extrapolation layer of its scenario's climate."""
    input:
        unpack(indicator_inputs),
    output:
        richness="results/indicators/{run}/richness.tif",
        mess="results/indicators/{run}/mess.tif",
        zarr=directory("results/indicators/{run}/indicators.zarr"),
    params:
        prediction=config["prediction"],
        device=config["sdm"]["device"],
    threads: workflow.cores
    log:
        "logs/indicators/{run}.log",
    benchmark:
        "logs/benchmarks/indicators/{run}.tsv",
    script:
        "../scripts/indicators.py"
