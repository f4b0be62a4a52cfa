import pandas as pd
from common import log_to
from sdm.climate import open_cube
from sdm.features import scenario_ranges
from sdm.fused import run_predictions
from sdm.grid import cell_area_km2
from sdm.threats import PROTECTED, threat_layers

log = log_to(snakemake.log[0])
scenario = snakemake.wildcards.scenario
current, future = run_predictions(snakemake.input, scenario, snakemake.params.prediction, snakemake.params.device,
                                  snakemake.threads)
grid = open_cube(snakemake.input.cube).isel(variable=0, drop=True)
protected = threat_layers({PROTECTED: snakemake.params.threats[PROTECTED]} if snakemake.params.threats.get(PROTECTED)
                          else None, grid).get(PROTECTED)
ranges = scenario_ranges(current, future, snakemake.params.dispersal, cell_area_km2(grid), protected)
table = pd.concat([frame.assign(dispersal=d) for d, frame in ranges.items()])
table.to_parquet(snakemake.output[0])
log.info("range sums of %d species for %s (%s), one pass", len(ranges[snakemake.params.dispersal[0]]), scenario,
         ", ".join(snakemake.params.dispersal))
