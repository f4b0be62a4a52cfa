if FUSED:

    rule range_sums:
        """Predicted-range sums of every run (range area, mean suitability, overlap with the present range,
        protected area), of the present and of every future scenario under every dispersal assumption, from one
        pass over the grid: each chunk's model forward, the present's included, is computed once for all runs.
        The same pass stores each scenario's presence as bits (and its MESS layer) for the indicator pass."""
        input:
            unpack(fused_inputs),
            cube="results/cubes/current.zarr",
            threats=threat_files,
        output:
            ranges=expand("results/iucn/ranges_{scenario}.parquet", scenario=ALL_SCENARIOS),
            presence=[directory(f"results/sdm/presence/{scenario}.zarr") for scenario in ALL_SCENARIOS],
        params:
            scenarios=ALL_SCENARIOS,
            dispersal=config["dispersal"],
            threats=config["threats"],
            prediction=config["prediction"],
            device=config["sdm"]["device"],
        threads: resource_threads("species_features")
        resources:
            mem_mb=resource_mb("species_features"),
            runtime=resource_minutes("species_features"),
        conda:
            "../envs/sdm.yaml"
        log:
            "logs/range_sums/all.log",
        benchmark:
            "logs/benchmarks/range_sums/all.tsv",
        script:
            "../scripts/range_sums.py"

else:

    rule range_sums:
        """Predicted-range sums of one scenario for every dispersal assumption (range area, mean suitability, overlap
        with the present range, protected area), from one pass over its stored predictions and the present's."""
        input:
            unpack(scenario_predictions),
            cube="results/cubes/current.zarr",
            threats=threat_files,
        output:
            "results/iucn/ranges_{scenario}.parquet",
        params:
            dispersal=scenario_dispersal,
            threats=config["threats"],
            prediction=config["prediction"],
            device=config["sdm"]["device"],
        threads: resource_threads("species_features")
        resources:
            mem_mb=resource_mb("species_features"),
            runtime=resource_minutes("species_features"),
        conda:
            "../envs/sdm.yaml"
        log:
            "logs/range_sums/{scenario}.log",
        benchmark:
            "logs/benchmarks/range_sums/{scenario}.tsv",
        script:
            "../scripts/range_sums.py"


rule species_features:
    """Per-species features of one run: occurrence geometry and niche, IUCN range metrics, threats at the records,
    and the run's predicted range and its change (from its scenario's range sums)."""
    input:
        ranges=lambda wildcards: f"results/iucn/ranges_{run_scenario(wildcards.run)}.parquet",
        occurrences="results/occurrences.parquet",
        rejected="results/rejected_occurrences.parquet",
        cube="results/cubes/current.zarr",
        threats=threat_files,
    output:
        "results/iucn/features_{run}.parquet",
    params:
        threats=config["threats"],
    resources:
        mem_mb=resource_mb("species_features"),
        runtime=resource_minutes("species_features"),
    conda:
        "../envs/sdm.yaml"
    log:
        "logs/species_features/{run}.log",
    benchmark:
        "logs/benchmarks/species_features/{run}.tsv",
    script:
        "../scripts/species_features.py"


if HAS_REDLIST:

    rule train_iucn:
        """Red List status classifier on the assessed species' current features, stratified k-fold CV."""
        input:
            features="results/iucn/features_current_none.parquet",
            redlist="results/redlist.parquet",
        output:
            classifier="results/iucn/classifier.skops",
            metrics=report("results/iucn/cv_metrics.json", caption="../report/cv_metrics.rst", category="Skill"),
            cv_predictions="results/iucn/cv_predictions.csv",
        params:
            iucn=config["iucn"],
        resources:
            mem_mb=resource_mb("train_iucn"),
            runtime=resource_minutes("train_iucn"),
        conda:
            "../envs/sdm.yaml"
        log:
            "logs/train_iucn.log",
        benchmark:
            "logs/benchmarks/train_iucn.tsv",
        script:
            "../scripts/train_iucn.py"

    rule predict_status:
        """Predicted Red List status of every species in one run (classifier, cross-checked with criterion A3)."""
        input:
            classifier="results/iucn/classifier.skops",
            features="results/iucn/features_{run}.parquet",
            redlist="results/redlist.parquet",
            cv_predictions="results/iucn/cv_predictions.csv",
        output:
            "results/iucn/status/{run}.csv",
        conda:
            "../envs/sdm.yaml"
        log:
            "logs/predict_status/{run}.log",
        benchmark:
            "logs/benchmarks/predict_status/{run}.tsv",
        script:
            "../scripts/predict_status.py"

    rule status_table:
        """All runs' status in one table: species x scenario x dispersal."""
        input:
            expand("results/iucn/status/{run}.csv", run=RUNS),
        output:
            report("results/iucn/status.csv", caption="../report/status.rst", category="Red List status"),
        params:
            ensembles=ENSEMBLES,
        conda:
            "../envs/sdm.yaml"
        log:
            "logs/status_table.log",
        benchmark:
            "logs/benchmarks/status_table.tsv",
        script:
            "../scripts/status_table.py"
