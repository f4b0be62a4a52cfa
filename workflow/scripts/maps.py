import json

import pandas as pd
from common import log_to
from sdm.maps import layers_from_paths, render_maps, run_metrics

log = log_to(snakemake.log[0])
inputs = snakemake.input
metrics = run_metrics(json.load(open(inputs.sdm_metrics)), json.load(open(inputs.ingest_report)),
                      json.load(open(inputs.iucn_metrics)) if inputs.iucn_metrics else None)
status = pd.read_csv(inputs.status) if inputs.status else None
maps = render_maps(layers_from_paths(inputs.indicators, snakemake.params.runs), snakemake.output[0], metrics, status,
                   tiles=snakemake.params.tiles)
log.info("maps: %s", {k: str(v) for k, v in maps.items()})
