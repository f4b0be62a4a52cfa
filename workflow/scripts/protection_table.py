import pandas as pd
from common import log_to
from sdm.protection import protection_table

log = log_to(snakemake.log[0])
features = {run: pd.read_parquet(path) for run, path in zip(snakemake.params.runs, snakemake.input.features)}
table = protection_table(features, pd.read_csv(snakemake.input.status))
table.to_csv(snakemake.output[0], index=False)
log.info("protection table: %d threatened species", len(table))
