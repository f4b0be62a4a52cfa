if DEMO:

    rule demo:
        """Generate the demo world: occurrences, Red List, current and future climate, and the known truth."""
        output:
            occurrences="results/demo/occurrences.csv",
            redlist="results/demo/redlist.csv",
            climate=expand("results/demo/climate/{scenario}.tif", scenario=["current", *config["demo"]["scenarios"]]),
            truth_species="results/demo/truth/species.csv",
            truth_presence=directory("results/demo/truth/presence.zarr"),
        params:
            demo=config["demo"],
        conda:
            "../envs/sdm.yaml"
        log:
            "logs/demo.log",
        benchmark:
            "logs/benchmarks/demo.tsv",
        script:
            "../scripts/demo.py"
