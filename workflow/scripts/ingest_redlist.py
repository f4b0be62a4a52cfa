import json

import pandas as pd
from common import log_to
from sdm.redlist import match_report, read_redlist

log = log_to(snakemake.log[0])
redlist, report = read_redlist(snakemake.input.redlist)
report |= match_report(redlist, pd.read_parquet(snakemake.input.occurrences, columns=["species"])["species"])
redlist.to_parquet(snakemake.output.redlist, index=False)
with open(snakemake.output.report, "w") as f:
    json.dump(report, f, indent=2)
log.info("Red List: %d labelled, %d unlabelled species", report["labelled"], report["unlabelled"])
