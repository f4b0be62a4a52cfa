import json
import tempfile
from pathlib import Path

import pandas as pd
from common import log_to
from sdm.fused import read_average_k
from sdm.maps import layers_from_paths, render_maps, run_metrics
from sdm.maps.explorer import display_predictions, species_explorer
from sdm.maps.regions import write_outlines
from sdm.occurrences import cleaned_records
from sdm.regions import read_regions, regions_geojson

log = log_to(snakemake.log[0])
inputs, params = snakemake.input, snakemake.params
out_dir = Path(snakemake.output[0])
metrics = run_metrics(json.load(open(inputs.sdm_metrics)), json.load(open(inputs.ingest_report)),
                      json.load(open(inputs.iucn_metrics)) if inputs.iucn_metrics else None)
status = pd.read_csv(inputs.status) if inputs.status else None
layers = layers_from_paths(inputs.indicators, params.runs)

regions = None
if inputs.regions:
    regions = regions_geojson(read_regions(inputs.regions, params.maps["regions"]["name_column"], "EPSG:4326"),
                              params.maps["regions"]["simplify_deg"])
pages = {}
if params.maps["explorer"]:
    sources = {s: inputs[f"scenario_{s}"] for s in params.scenarios}
    # fused average-K: each scenario's threshold as set on the whole grid
    average_k = {s: read_average_k(inputs[f"average_k_{s}"]) for s in params.scenarios
                 if inputs.get(f"average_k_{s}")}
    records = cleaned_records(pd.read_parquet(inputs.occurrences), pd.read_parquet(inputs.rejected))
    outlines = write_outlines(regions, out_dir / "lib") if regions else None
    log.info("species explorer: %d species with records", records["species"].nunique())
    # fused: each scenario's display predictions are written once to a scratch folder beside the maps
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".explorer-") as scratch:
        predictions = display_predictions(sources, params.prediction, inputs.get("model"), params.device,
                                          snakemake.threads, average_k=average_k, scratch=scratch)
        pages["Species explorer: search a species"] = species_explorer(
            predictions, params.runs, records, status, out_dir, min_records=params.min_records, outlines=outlines)
maps = render_maps(layers, out_dir, metrics, status, tiles=params.maps["tiles"], config=params.config, pages=pages,
                   regions=regions, region_table=pd.read_csv(inputs.region_table) if inputs.region_table else None,
                   protection=pd.read_csv(inputs.protection) if inputs.protection else None)
log.info("maps: %s", {k: str(v) for k, v in maps.items()})
