from common import log_to
from sdm.maps import layers_from_paths
from sdm.regions import read_regions, region_summary

import rioxarray

log = log_to(snakemake.log[0])
layers = layers_from_paths(snakemake.input.layers, snakemake.params.runs)
with rioxarray.open_rasterio(snakemake.input.layers[0]) as first:
    crs = first.rio.crs
regions = read_regions(snakemake.input.regions, snakemake.params.name_column, crs)
table = region_summary(layers, regions)
table.to_csv(snakemake.output[0], index=False)
log.info("region summaries: %d regions x %d runs x %d indicators", table["region"].nunique(),
         table["run"].nunique(), table["indicator"].nunique())
