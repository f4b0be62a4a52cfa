import pandas as pd
from common import log_to
from sdm.climate import open_cube
from sdm.features import species_features
from sdm.fused import run_predictions
from sdm.grid import cell_area_km2
from sdm.occurrences import cleaned_records
from sdm.threats import threat_layers

log = log_to(snakemake.log[0])
scenario, dispersal = snakemake.wildcards.run.rsplit("_", 1)
cube = open_cube(snakemake.input.cube)
current, future = run_predictions(snakemake.input, scenario, snakemake.params.prediction,
                                  snakemake.params.device, snakemake.threads)
occurrences = pd.read_parquet(snakemake.input.occurrences)
records = cleaned_records(occurrences, pd.read_parquet(snakemake.input.rejected))
grid = cube.isel(variable=0, drop=True)
threats = threat_layers(snakemake.params.threats, grid)
if threats:
    log.info("threat layers: %s", list(threats))
features = species_features(occurrences, cube, current, future, dispersal, cell_area_km2(grid), records, threats)
features.to_parquet(snakemake.output[0])
log.info("features of %d species for %s", len(features), snakemake.wildcards.run)
