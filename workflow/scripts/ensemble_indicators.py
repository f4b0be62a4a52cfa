from common import log_to
from pathlib import Path
from sdm.ensembles import ensemble_indicators

log = log_to(snakemake.log[0])
written = ensemble_indicators(snakemake.params.members, Path(snakemake.output.zarr).parent,
                              snakemake.params.with_status)
log.info("ensemble %s of %s: wrote %s", snakemake.wildcards.run, list(snakemake.params.members),
         [p.name for p in written])
