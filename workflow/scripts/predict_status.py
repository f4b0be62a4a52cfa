import pandas as pd
from common import log_to
from sdm.status import load_classifier, status_table

log = log_to(snakemake.log[0])
scenario, dispersal = snakemake.wildcards.run.rsplit("_", 1)
redlist = pd.read_parquet(snakemake.input.redlist).set_index("species")["category"]
oof = pd.read_csv(snakemake.input.cv_predictions, index_col="species")["category_cv"]
table = status_table(load_classifier(snakemake.input.classifier),
                     {(scenario, dispersal): pd.read_parquet(snakemake.input.features)}, redlist, oof)
table.to_csv(snakemake.output[0], index=False)
log.info("status of %d species for %s: %s", len(table), snakemake.wildcards.run, table["status"].value_counts().to_dict())
