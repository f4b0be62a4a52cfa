rule indicators_current:
    """Per-cell indicators of the present (richness, threatened count and share, most threatened status) and the
    MESS extrapolation layer of the present climate."""
    input:
        unpack(indicator_inputs),
    output:
        expand("results/indicators/{{run}}/{name}.tif", name=layer_names(False, HAS_REDLIST)),
        zarr=directory("results/indicators/{run}/indicators.zarr"),
    wildcard_constraints:
        run="current_none",
    params:
        prediction=config["prediction"],
        device=config["sdm"]["device"],
    threads: resource_threads("indicators")
    resources:
        mem_mb=resource_mb("indicators"),
        runtime=resource_minutes("indicators"),
    conda:
        "../envs/sdm.yaml"
    log:
        "logs/indicators/{run}.log",
    benchmark:
        "logs/benchmarks/indicators/{run}.tsv",
    script:
        "../scripts/indicators.py"


if FUTURE_RUNS:

    rule indicators_future:
        """Per-cell indicators of one future run, their change against the present, and the MESS extrapolation
        layer of the scenario's climate."""
        input:
            unpack(indicator_inputs),
        output:
            expand("results/indicators/{{run}}/{name}.tif", name=layer_names(True, HAS_REDLIST)),
            zarr=directory("results/indicators/{run}/indicators.zarr"),
        wildcard_constraints:
            run="|".join(re.escape(r) for r in FUTURE_RUNS),
        params:
            prediction=config["prediction"],
            device=config["sdm"]["device"],
        threads: resource_threads("indicators")
        resources:
            mem_mb=resource_mb("indicators"),
            runtime=resource_minutes("indicators"),
        conda:
            "../envs/sdm.yaml"
        log:
            "logs/indicators/{run}.log",
        benchmark:
            "logs/benchmarks/indicators/{run}.tsv",
        script:
            "../scripts/indicators.py"
