rule maps:
    """Offline folium maps: one per indicator with a layer per run, and index.html with the run's metrics."""
    input:
        indicators=expand("results/indicators/{run}/richness.tif", run=RUNS),
        mess=expand("results/indicators/{run}/mess.tif", run=RUNS),
        sdm_metrics="results/sdm/metrics.json",
        ingest_report="results/ingest_report.json",
        iucn_metrics="results/iucn/cv_metrics.json" if HAS_REDLIST else [],
        status="results/iucn/status.csv" if HAS_REDLIST else [],
    output:
        index=report("results/maps/index.html", caption="../report/maps.rst", category="Maps"),
    params:
        runs=RUNS,
        tiles=config["maps"]["tiles"],
    log:
        "logs/maps.log",
    benchmark:
        "logs/benchmarks/maps.tsv",
    script:
        "../scripts/maps.py"
