import pandas as pd
from common import log_to
from sdm.climate import open_cube
from sdm.features import all_scenario_ranges, scenario_ranges
from sdm.device_pass import device_scenario_ranges, use_device_pass
from sdm.fused import read_average_k, run_predictions, scenario_predictions
from sdm.model import resolve_device
from sdm.grid import cell_area_km2
from sdm.threats import PROTECTED, threat_layers

log = log_to(snakemake.log[0])
params = snakemake.params
grid = open_cube(snakemake.input.cube).isel(variable=0, drop=True)
protected = threat_layers({PROTECTED: params.threats[PROTECTED]} if params.threats.get(PROTECTED) else None,
                          grid).get(PROTECTED)


def table(ranges: dict) -> pd.DataFrame:
    return pd.concat([frame.assign(dispersal=d) for d, frame in ranges.items()])


if "scenarios" in params.keys():  # fused: every scenario and the present in one pass
    scenarios = list(params.scenarios)
    cubes, thresholds = dict(zip(scenarios, snakemake.input.cubes)), dict(zip(scenarios, snakemake.input.thresholds))
    stores = dict(zip(scenarios, snakemake.output.presence))
    device = resolve_device(params.device)
    if use_device_pass(params.prediction.get("reductions", "auto"), device, params.prediction["assemblage"]):
        order = ["current"] + [s for s in scenarios if s != "current"]
        ranges = device_scenario_ranges(snakemake.input.model, {s: open_cube(cubes[s]) for s in order},
                                        params.prediction, params.dispersal, cell_area_km2(grid), protected,
                                        presence_stores=stores,
                                        average_k={s: read_average_k(path) for s, path in thresholds.items()},
                                        device=params.device, threads=snakemake.threads)
        where = f"on {device.type}"
    else:
        predictions = scenario_predictions(snakemake.input.model, cubes, params.prediction, thresholds,
                                           params.device, snakemake.threads)
        current = predictions.pop("current")
        ranges = all_scenario_ranges(current, predictions, params.dispersal, cell_area_km2(grid), protected,
                                     presence_stores=stores)
        where = "on the host"
    for scenario, path in zip(scenarios, snakemake.output.ranges):
        runs = {"none": next(iter(ranges["current"].values()))} if scenario == "current" else ranges[scenario]
        table(runs).to_parquet(path)
    log.info("range sums of %d species for %s (%s), one pass, reductions %s; presence stores %s",
             len(next(iter(ranges["current"].values()))), ", ".join(scenarios), ", ".join(params.dispersal), where,
             ", ".join(snakemake.output.presence))
else:
    scenario = snakemake.wildcards.scenario
    current, future = run_predictions(snakemake.input, scenario, params.prediction, params.device,
                                      snakemake.threads)
    ranges = scenario_ranges(current, future, params.dispersal, cell_area_km2(grid), protected)
    table(ranges).to_parquet(snakemake.output[0])
    log.info("range sums of %d species for %s (%s), one pass", len(ranges[params.dispersal[0]]), scenario,
             ", ".join(params.dispersal))
