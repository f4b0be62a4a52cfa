rule maps:
    """Offline maps: one per indicator with a layer per run, the species explorer, the regions and protection
    pages, and index.html with the run's metrics and config."""
    input:
        unpack(explorer_inputs),
        indicators=[f for run in MAP_RUNS for f in indicator_files(run)],
        sdm_metrics="results/sdm/metrics.json",
        ingest_report="results/ingest_report.json",
        iucn_metrics="results/iucn/cv_metrics.json" if HAS_REDLIST else [],
        status="results/iucn/status.csv" if HAS_REDLIST else [],
        regions=REGIONS["path"] if REGIONS else [],
        region_table="results/indicators/regions.csv" if REGIONS else [],
        protection="results/indicators/protection.csv" if HAS_GAP else [],
    output:
        report(directory("results/maps"), htmlindex="index.html", caption="../report/maps.rst", category="Maps"),
    params:
        runs=MAP_RUNS,
        scenarios=["current", *SCENARIOS],
        maps=config["maps"],
        prediction=config["prediction"],
        device=config["sdm"]["device"],
        min_records=config["sdm"]["min_records"],
        config=config,
    threads: resource_threads("maps")
    resources:
        mem_mb=resource_mb("maps"),
        runtime=resource_minutes("maps"),
    conda:
        "../envs/sdm.yaml"
    log:
        "logs/maps.log",
    benchmark:
        "logs/benchmarks/maps.tsv",
    script:
        "../scripts/maps.py"
