import json

import pandas as pd
from common import log_to
from sdm.maps import render_maps

log = log_to(snakemake.log[0])
metrics = {"Species distribution model": json.load(open(snakemake.input.sdm_metrics)),
           "Occurrence cleaning": json.load(open(snakemake.input.ingest_report))}
if snakemake.input.iucn_metrics:
    metrics["Red List classifier"] = json.load(open(snakemake.input.iucn_metrics))
status = pd.read_csv(snakemake.input.status) if snakemake.input.status else None
maps = render_maps(snakemake.params.runs, "results/indicators", snakemake.output.index, metrics, status,
                   tiles=snakemake.params.tiles)
log.info("maps: %s", {k: str(v) for k, v in maps.items()})
