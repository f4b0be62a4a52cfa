rule maps:
    """Offline folium maps: one per indicator with a layer per run, and index.html with the run's metrics."""
    input:
        indicators=[f for run in RUNS for f in indicator_files(run)],
        sdm_metrics="results/sdm/metrics.json",
        ingest_report="results/ingest_report.json",
        iucn_metrics="results/iucn/cv_metrics.json" if HAS_REDLIST else [],
        status="results/iucn/status.csv" if HAS_REDLIST else [],
    output:
        report(directory("results/maps"), htmlindex="index.html", caption="../report/maps.rst", category="Maps"),
    params:
        runs=RUNS,
        tiles=config["maps"]["tiles"],
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
