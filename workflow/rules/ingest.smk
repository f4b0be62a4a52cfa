rule ingest_climate:
    """Climate rasters of one scenario -> a cube on the run's grid (the current cube defines the grid)."""
    input:
        source=climate_source,
        grid=lambda w: [] if w.scenario == "current" else "results/cubes/current.zarr",
    output:
        directory("results/cubes/{scenario}.zarr"),
    params:
        grid=config["grid"],
        variables=config["climate"]["variables"],
        categorical=config["climate"]["categorical"],
        nodata=config["climate"]["nodata"],
    resources:
        mem_mb=resource_mb("ingest_climate"),
        runtime=resource_minutes("ingest_climate"),
    conda:
        "../envs/sdm.yaml"
    log:
        "logs/ingest_climate/{scenario}.log",
    benchmark:
        "logs/benchmarks/ingest_climate/{scenario}.tsv",
    script:
        "../scripts/ingest_climate.py"


rule ingest_occurrences:
    """Occurrence table -> cleaned records on the grid, one per species x cell, with a report of every drop."""
    input:
        occurrences=config["occurrences"]["path"],
        cube="results/cubes/current.zarr",
    output:
        occurrences="results/occurrences.parquet",
        rejected="results/rejected_occurrences.parquet",
        report="results/ingest_report.json",
    params:
        columns=config["occurrences"]["columns"],
        chunksize=config["occurrences"]["chunksize"],
        cleaning=config["occurrences"]["cleaning"],
        min_records=config["sdm"]["min_records"],
    resources:
        mem_mb=resource_mb("ingest_occurrences"),
        runtime=resource_minutes("ingest_occurrences"),
    conda:
        "../envs/sdm.yaml"
    log:
        "logs/ingest_occurrences.log",
    benchmark:
        "logs/benchmarks/ingest_occurrences.tsv",
    script:
        "../scripts/ingest_occurrences.py"


if HAS_REDLIST:

    rule ingest_redlist:
        """Red List table -> species and category (LC..CR; DD/NE unlabelled), matched to the occurrences."""
        input:
            redlist=config["redlist"]["path"],
            occurrences="results/occurrences.parquet",
        output:
            redlist="results/redlist.parquet",
            report="results/redlist_report.json",
        conda:
            "../envs/sdm.yaml"
        log:
            "logs/ingest_redlist.log",
        benchmark:
            "logs/benchmarks/ingest_redlist.tsv",
        script:
            "../scripts/ingest_redlist.py"
