from pathlib import Path

from common import log_to
from sdm.indicators import run_indicators

log = log_to(snakemake.log[0])
scenario, dispersal = snakemake.wildcards.run.rsplit("_", 1)
paths = run_indicators(snakemake.input.current, snakemake.input.future, scenario, dispersal,
                       Path(snakemake.output.richness).parent,
                       status=snakemake.input.get("status"), current_status=snakemake.input.get("current_status"))
log.info("wrote %s", [str(p) for p in paths])
