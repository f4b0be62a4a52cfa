import math
import re
import sys
from pathlib import Path

from snakemake.utils import validate

sys.path.insert(0, str(Path(workflow.basedir).parent))  # the sdm package, also when it is not pip-installed
from sdm.config import check_inputs, demo_outputs, remove_stale_locks, run_names, validate_config  # noqa: E402
from sdm.ensembles import ensemble_layer_names, ensemble_runs, member_runs  # noqa: E402
from sdm.indicators import layer_names  # noqa: E402
from sdm.resources import job_size, mem_mb, runtime, threads  # noqa: E402

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

ENSEMBLES = config["climate"].get("ensembles") or {}
ENSEMBLE_RUNS = ensemble_runs(ENSEMBLES, config["dispersal"])  # "{ensemble}_{dispersal}": medians of member runs
MAP_RUNS = RUNS + ENSEMBLE_RUNS
REGIONS = config["maps"].get("regions")
DEMO_DIR = "results/demo"
# before threats.protected_areas is filled in from maps below, so that an error names the key the user wrote
check_inputs(config, generated=demo_outputs(config, DEMO_DIR) if DEMO else [])
# One protected-area raster for the features, the gap map and the protection table (validate_config rejects a
# maps.protected_areas that differs from threats.protected_areas)
PROTECTED = config["maps"].get("protected_areas") or (config.get("threats") or {}).get("protected_areas")
if PROTECTED and not (config.get("threats") or {}).get("protected_areas"):
    config.setdefault("threats", {})["protected_areas"] = PROTECTED
HAS_GAP = bool(PROTECTED) and HAS_REDLIST

if not HAS_REDLIST:
    print("No redlist.path in the config: the run stops after predictions and richness maps.", file=sys.stderr)

wildcard_constraints:
    scenario="|".join(re.escape(s) for s in ["current", *SCENARIOS]),
    dispersal="full|none",
    run="|".join(re.escape(r) for r in MAP_RUNS),


def climate_source(wildcards):
    """The configured raster file(s) of a scenario."""
    source = config["climate"]["current"] if wildcards.scenario == "current" else config["climate"]["scenarios"][wildcards.scenario]
    return source if isinstance(source, list) else [source]


def run_scenario(run):
    return run.rsplit("_", 1)[0]


FUSED = config["prediction"]["fused"]
# fused average-K: the present's single threshold is computed once (rule average_k_threshold) and read by every pass
SHARED_AVERAGE_K = FUSED and config["prediction"]["assemblage"] == "average_k"


def predict_inputs(wildcards):
    """Stored mode's prediction of one scenario: the model and its climate cube, and with average-K, for a future,
    the present's prediction store (its threshold is the one every scenario applies)."""
    inputs = {"model": "results/sdm/model.pt", "cube": f"results/cubes/{wildcards.scenario}.zarr"}
    if config["prediction"]["assemblage"] == "average_k" and wildcards.scenario != "current":
        inputs["present"] = "results/predictions/current.zarr"
    return inputs


AVERAGE_K_FILE = "results/sdm/average_k/current.json"
"""The average-K threshold file every pass over every scenario reads: the present's, since one threshold chosen on
the present applies to every scenario (a future's own would follow its mean set size, and a cell of the same
suitability would be present in one scenario and absent in another)."""


def average_k_inputs(roles):
    """The average-K threshold file as an ``average_k_{role}`` input of each of ``roles``, in fused average-K mode;
    none otherwise."""
    return {f"average_k_{role}": AVERAGE_K_FILE for role in roles} if SHARED_AVERAGE_K else {}


ALL_SCENARIOS = ["current", *SCENARIOS]


def fused_inputs(wildcards=None):
    """What fused mode's passes over every scenario at once read: the model, every scenario's climate cube (in the
    order of ALL_SCENARIOS) and, with average-K, the threshold file for each of them (the present's)."""
    return {"model": "results/sdm/model.pt", "cubes": [f"results/cubes/{s}.zarr" for s in ALL_SCENARIOS],
            "thresholds": [AVERAGE_K_FILE] * len(ALL_SCENARIOS) if SHARED_AVERAGE_K else []}


def fused_indicator_inputs(wildcards=None):
    """Fused mode's indicator pass: the presence store of every scenario (in the order of ALL_SCENARIOS, written by
    the range pass) and, with a Red List, every run's status (in the order of RUNS)."""
    return {"presence": [f"results/sdm/presence/{scenario}.zarr" for scenario in ALL_SCENARIOS],
            "statuses": [f"results/iucn/status/{run}.csv" for run in RUNS] if HAS_REDLIST else []}


def threat_files(wildcards=None):
    """The rasters of the config's threats section (inputs of species_features, so that a new layer reruns it)."""
    threats = config.get("threats") or {}
    entries = ([threats["protected_areas"]] if threats.get("protected_areas") else []) + list(
        (threats.get("pressures") or {}).values())
    return [entry["path"] for entry in entries]


def scenario_predictions(wildcards):
    """What one scenario's passes read: its prediction store and the present's, or in fused mode the cubes and the
    model (the present alone for the scenario ``current``)."""
    scenario = wildcards.scenario
    if FUSED:
        roles = {"current": "current"} | ({} if scenario == "current" else {"future": scenario})
        return {"model": "results/sdm/model.pt"} | {role: f"results/cubes/{s}.zarr" for role, s in roles.items()} | (
            average_k_inputs(roles))
    inputs = {"current": "results/predictions/current.zarr"}
    return inputs | ({} if scenario == "current" else {"future": f"results/predictions/{scenario}.zarr"})


def scenario_dispersal(wildcards):
    """The dispersal assumptions of a scenario's runs: ``none`` for the present, the config's list otherwise."""
    return ["none"] if wildcards.scenario == "current" else list(config["dispersal"])


def scenario_indicator_inputs(wildcards):
    """A future scenario's indicator pass: its predictions, and with a Red List every run's and the present's
    status."""
    inputs = scenario_predictions(wildcards)
    if HAS_REDLIST:
        inputs |= {f"status_{d}": f"results/iucn/status/{wildcards.scenario}_{d}.csv" for d in config["dispersal"]}
        inputs["current_status"] = "results/iucn/status/current_none.csv"
    return inputs


def run_predictions(wildcards):
    """What a run's features and indicators read: prediction stores, or in fused mode the cubes and the model."""
    scenario = run_scenario(wildcards.run)
    if FUSED:
        return {"model": "results/sdm/model.pt", "current": "results/cubes/current.zarr",
                "future": f"results/cubes/{scenario}.zarr"} | average_k_inputs({"current": "current",
                                                                                 "future": scenario})
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
    """Every indicator GeoTIFF of a run, each declared as an output where it is made; the indicators layers,
    for an ensemble run its medians and agreement layers, and the protection gap when protected areas are set."""
    names = ensemble_layer_names(HAS_REDLIST) if run in ENSEMBLE_RUNS else layer_names(run != "current_none",
                                                                                       HAS_REDLIST)
    return [f"results/indicators/{run}/{name}.tif" for name in names + (["threatened_unprotected"] if HAS_GAP else [])]


def explorer_inputs(wildcards=None):
    """What the species explorer reads: every scenario's predictions (in fused mode the model and the cubes), the
    cleaned records and the statuses."""
    if not config["maps"]["explorer"]:
        return {}
    scenarios = ["current", *SCENARIOS]
    if FUSED:
        inputs = {"model": "results/sdm/model.pt", **{f"scenario_{s}": f"results/cubes/{s}.zarr" for s in scenarios},
                  **average_k_inputs({s: s for s in scenarios})}
    else:
        inputs = {f"scenario_{s}": f"results/predictions/{s}.zarr" for s in scenarios}
    return inputs | {"occurrences": "results/occurrences.parquet", "rejected": "results/rejected_occurrences.parquet"}


FUTURE_RUNS = [r for r in RUNS if r != "current_none"]


def _grid_size():
    """Cells and climate variables of the run's grid as the config gives them (before any cube exists): the
    grid's bounds and resolution, else the first present-climate raster, else the demo's size."""
    grid = config.get("grid") or {}
    if grid.get("bounds") and grid.get("resolution"):
        xmin, ymin, xmax, ymax = grid["bounds"]
        cells = math.ceil((xmax - xmin) / grid["resolution"]) * math.ceil((ymax - ymin) / grid["resolution"])
    else:
        cells = config["demo"]["rows"] * config["demo"]["cols"] if DEMO else 1_000_000
    variables = len(config["climate"].get("variables") or []) or 19
    first = climate_source(type("W", (), {"scenario": "current"})())[0]
    if Path(first).is_file():
        import rasterio

        with rasterio.open(first) as src:
            if not (grid.get("bounds") and grid.get("resolution")):
                cells = src.width * src.height
            if not config["climate"].get("variables"):
                variables = src.count
    return cells, variables


GRID_CELLS, GRID_VARIABLES = _grid_size()


def resource_mb(rule):
    """mem_mb of a rule's job from its inputs' size (sdm.resources), doubled on each retry."""
    return lambda wildcards, input, attempt: attempt * mem_mb(rule, **job_size(input, GRID_CELLS, GRID_VARIABLES))


def resource_minutes(rule):
    """runtime (minutes) of a rule's job from its inputs' size (sdm.resources), doubled on each retry."""
    return lambda wildcards, input, attempt: attempt * runtime(rule, **job_size(input, GRID_CELLS, GRID_VARIABLES))


def resource_threads(rule):
    """Threads of a rule's job: all cores for a heavy job, half for a light per-run job (sdm.resources.threads)."""
    return lambda wildcards, input: threads(rule, workflow.cores, **job_size(input, GRID_CELLS, GRID_VARIABLES))
