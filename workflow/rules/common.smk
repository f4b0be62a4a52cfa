import re
import sys
from pathlib import Path

from snakemake.utils import validate

sys.path.insert(0, str(Path(workflow.basedir).parent))  # the sdm package, also when it is not pip-installed
from sdm.config import check_inputs, demo_outputs, remove_stale_locks, run_names, validate_config  # noqa: E402
from sdm.indicators import layer_names  # noqa: E402

# One line naming the key at fault first; then snakemake's validate fills in the schema's defaults.
validate_config(config, Path(workflow.basedir) / "schemas/config.schema.yaml")
validate(config, schema="../schemas/config.schema.yaml")

if remove_stale_locks():
    print("Removed the directory lock that a killed run left (no snakemake process works in this directory); "
          "incomplete outputs are made again.", file=sys.stderr)

DEMO = "demo" in config
SCENARIOS = list(config["climate"].get("scenarios") or {})
HAS_REDLIST = bool(config.get("redlist"))
RUNS = run_names(SCENARIOS, config["dispersal"])  # "current_none" plus "{scenario}_{dispersal}"

DEMO_DIR = "results/demo"
check_inputs(config, generated=demo_outputs(config, DEMO_DIR) if DEMO else [])

if not HAS_REDLIST:
    print("No redlist.path in the config: the run stops after predictions and richness maps.", file=sys.stderr)

wildcard_constraints:
    scenario="|".join(re.escape(s) for s in ["current", *SCENARIOS]),
    dispersal="full|none",
    run="|".join(re.escape(r) for r in RUNS),


def climate_source(wildcards):
    """The configured raster file(s) of a scenario."""
    source = config["climate"]["current"] if wildcards.scenario == "current" else config["climate"]["scenarios"][wildcards.scenario]
    return source if isinstance(source, list) else [source]


def run_scenario(run):
    return run.rsplit("_", 1)[0]


FUSED = config["prediction"]["fused"]


def threat_files(wildcards=None):
    """The rasters of the config's threats section (inputs of species_features, so that a new layer reruns it)."""
    threats = config.get("threats") or {}
    entries = ([threats["protected_areas"]] if threats.get("protected_areas") else []) + list(
        (threats.get("pressures") or {}).values())
    return [entry["path"] for entry in entries]


def run_predictions(wildcards):
    """What a run's features and indicators read: prediction stores, or in fused mode the cubes and the model."""
    scenario = run_scenario(wildcards.run)
    if FUSED:
        return {"model": "results/sdm/model.pt", "current": "results/cubes/current.zarr",
                "future": f"results/cubes/{scenario}.zarr"}
    return {"current": "results/predictions/current.zarr", "future": f"results/predictions/{scenario}.zarr"}


def all_outputs():
    outputs = ["results/ingest_report.json", "results/sdm/metrics.json"]
    if not FUSED:
        outputs += expand("results/predictions/{scenario}.zarr", scenario=["current", *SCENARIOS])
    if HAS_REDLIST:
        outputs += ["results/iucn/status.csv", "results/iucn/cv_metrics.json"]
    outputs += ["results/maps"]  # its inputs: every indicator layer of every run
    return outputs


def indicator_inputs(wildcards):
    inputs = run_predictions(wildcards)
    if HAS_REDLIST:
        inputs |= {"status": f"results/iucn/status/{wildcards.run}.csv",
                   "current_status": "results/iucn/status/current_none.csv"}
    return inputs


def indicator_files(run):
    """Every GeoTIFF the indicators rule writes for a run (all declared)."""
    return [f"results/indicators/{run}/{name}.tif" for name in layer_names(run != "current_none", HAS_REDLIST)]


FUTURE_RUNS = [r for r in RUNS if r != "current_none"]
