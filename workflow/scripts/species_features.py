import pandas as pd
from common import log_to
from sdm.climate import open_cube
from sdm.features import species_features
from sdm.occurrences import cleaned_records
from sdm.threats import threat_layers

log = log_to(snakemake.log[0])
scenario, dispersal = snakemake.wildcards.run.rsplit("_", 1)
cube = open_cube(snakemake.input.cube)
ranges = pd.read_parquet(snakemake.input.ranges)
ranges = ranges[ranges["dispersal"] == dispersal].drop(columns="dispersal")
occurrences = pd.read_parquet(snakemake.input.occurrences)
records = cleaned_records(occurrences, pd.read_parquet(snakemake.input.rejected))
threats = threat_layers(snakemake.params.threats, cube.isel(variable=0, drop=True))
if threats:
    log.info("threat layers: %s", list(threats))
features = species_features(occurrences, cube, None, None, dispersal, None, records, threats, ranges=ranges)
features.to_parquet(snakemake.output[0])
log.info("features of %d species for %s", len(features), snakemake.wildcards.run)
