import pandas as pd
from common import log_to
from sdm.ensembles import ensemble_status

log = log_to(snakemake.log[0])
table = pd.concat([pd.read_csv(path) for path in snakemake.input], ignore_index=True)
table = pd.concat([table, ensemble_status(table, snakemake.params.ensembles)], ignore_index=True)
table.to_csv(snakemake.output[0], index=False)
log.info("status table: %d rows", len(table))
