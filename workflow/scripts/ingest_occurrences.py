import json

from common import log_to
from sdm.climate import open_cube, valid_mask
from sdm.occurrences import ingest_occurrences

log = log_to(snakemake.log[0])
cube = open_cube(snakemake.input.cube)
occurrences, rejected, report = ingest_occurrences(
    [paths] if isinstance(paths := snakemake.input.occurrences, str) else list(paths), cube.isel(variable=0, drop=True), valid_mask(cube),
    columns=snakemake.params.columns, chunksize=snakemake.params.chunksize, cleaning=snakemake.params.cleaning,
    min_records=snakemake.params.min_records,
)
occurrences.to_parquet(snakemake.output.occurrences, index=False)
rejected.to_parquet(snakemake.output.rejected, index=False)
with open(snakemake.output.report, "w") as f:
    json.dump(report, f, indent=2)
log.info("read %d records, kept %d, dropped %s", report["records_read"], report["records_kept"], report["dropped"])
