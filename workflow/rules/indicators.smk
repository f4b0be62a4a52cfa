if FUSED:

    rule indicators:
        """Per-cell indicators of every run (richness, threatened count and share, most threatened status; for a
        future run their change against the present) and each scenario's MESS extrapolation layer, from one pass
        over the presence stores of the range pass (presence as bits: no model forward here)."""
        input:
            unpack(fused_indicator_inputs),
        output:
            [f"results/indicators/{run}/{name}.tif" for run in RUNS
             for name in layer_names(run != "current_none", HAS_REDLIST)],
            zarr=[directory(f"results/indicators/{run}/indicators.zarr") for run in RUNS],
        params:
            runs=RUNS,
            scenarios=ALL_SCENARIOS,
        threads: resource_threads("indicators")
        resources:
            mem_mb=resource_mb("indicators"),
            runtime=resource_minutes("indicators"),
        conda:
            "../envs/sdm.yaml"
        log:
            "logs/indicators/all.log",
        benchmark:
            "logs/benchmarks/indicators/all.tsv",
        script:
            "../scripts/indicators.py"

else:

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


    if SCENARIOS:

        rule indicators_future:
            """Per-cell indicators of every run of one future scenario (each dispersal assumption), their change
            against the present, and the MESS extrapolation layer of the scenario's climate: one pass over the
            scenario's stored predictions (and the present's) for all its runs."""
            input:
                unpack(scenario_indicator_inputs),
            output:
                expand("results/indicators/{{scenario}}_{dispersal}/{name}.tif", dispersal=config["dispersal"],
                       name=layer_names(True, HAS_REDLIST)),
                zarr=[directory(p) for p in expand("results/indicators/{{scenario}}_{dispersal}/indicators.zarr",
                                                   dispersal=config["dispersal"])],
            wildcard_constraints:
                scenario="|".join(re.escape(s) for s in SCENARIOS),
            params:
                dispersal=config["dispersal"],
                prediction=config["prediction"],
                device=config["sdm"]["device"],
            threads: resource_threads("indicators")
            resources:
                mem_mb=resource_mb("indicators"),
                runtime=resource_minutes("indicators"),
            conda:
                "../envs/sdm.yaml"
            log:
                "logs/indicators/{scenario}.log",
            benchmark:
                "logs/benchmarks/indicators/{scenario}.tsv",
            script:
                "../scripts/indicators.py"


if ENSEMBLE_RUNS:

    rule ensemble_indicators:
        """Median of an ensemble's member runs for every indicator layer, and the climate-model agreement layers
        (share of members in which threatened species rise / richness falls)."""
        input:
            lambda wildcards: [f"results/indicators/{member}/{name}.tif"
                               for member in member_runs(wildcards.run, ENSEMBLES)
                               for name in layer_names(True, HAS_REDLIST)],
        output:
            expand("results/indicators/{{run}}/{name}.tif", name=ensemble_layer_names(HAS_REDLIST)),
            zarr=directory("results/indicators/{run}/indicators.zarr"),
        wildcard_constraints:
            run="|".join(re.escape(r) for r in ENSEMBLE_RUNS),
        params:
            members=lambda wildcards: {m: f"results/indicators/{m}" for m in member_runs(wildcards.run, ENSEMBLES)},
            with_status=HAS_REDLIST,
        resources:
            mem_mb=resource_mb("indicators"),
            runtime=resource_minutes("indicators"),
        conda:
            "../envs/sdm.yaml"
        log:
            "logs/ensemble_indicators/{run}.log",
        benchmark:
            "logs/benchmarks/ensemble_indicators/{run}.tsv",
        script:
            "../scripts/ensemble_indicators.py"


if HAS_GAP:

    rule protection_gap:
        """Threatened species richness weighted by the unprotected share of each cell (the gap map's layer)."""
        input:
            threatened="results/indicators/{run}/threatened_count.tif",
            protected=PROTECTED["path"],
        output:
            "results/indicators/{run}/threatened_unprotected.tif",
        params:
            band=PROTECTED.get("band"),
        conda:
            "../envs/sdm.yaml"
        log:
            "logs/protection_gap/{run}.log",
        benchmark:
            "logs/benchmarks/protection_gap/{run}.tsv",
        script:
            "../scripts/protection_gap.py"

    rule protection_table:
        """Threatened species ranked by the protected share of their predicted range, now and in each run."""
        input:
            features=expand("results/iucn/features_{run}.parquet", run=RUNS),
            status="results/iucn/status.csv",
        output:
            "results/indicators/protection.csv",
        params:
            runs=RUNS,
        conda:
            "../envs/sdm.yaml"
        log:
            "logs/protection_table.log",
        script:
            "../scripts/protection_table.py"


if REGIONS:

    rule region_summary:
        """Area-weighted zonal statistics of every indicator layer and run over the config's regions."""
        input:
            layers=[f for run in MAP_RUNS for f in indicator_files(run)],
            regions=REGIONS["path"],
        output:
            "results/indicators/regions.csv",
        params:
            runs=MAP_RUNS,
            name_column=REGIONS["name_column"],
        resources:
            mem_mb=resource_mb("maps"),
            runtime=resource_minutes("maps"),
        conda:
            "../envs/sdm.yaml"
        log:
            "logs/region_summary.log",
        benchmark:
            "logs/benchmarks/region_summary.tsv",
        script:
            "../scripts/region_summary.py"
