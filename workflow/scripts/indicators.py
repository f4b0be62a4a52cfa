from pathlib import Path

from common import log_to
from sdm.fused import run_predictions
from sdm.indicators import run_indicators

log = log_to(snakemake.log[0])
scenario, dispersal = snakemake.wildcards.run.rsplit("_", 1)
current, future = run_predictions(snakemake.input, scenario, snakemake.params.prediction,
                                  snakemake.params.device, snakemake.threads)
paths = run_indicators(current, future, scenario, dispersal, Path(snakemake.output.richness).parent,
                       status=snakemake.input.get("status"), current_status=snakemake.input.get("current_status"))
log.info("wrote %s", [str(p) for p in paths])
if not Path(snakemake.output.mess).is_file():
    raise RuntimeError(f"no MESS layer for {snakemake.wildcards.run}: the model or the predictions predate it "
                       "(no reference_quantiles in the checkpoint); rerun them: snakemake --forcerun train_sdm")
