from pathlib import Path

from common import log_to
from sdm.fused import run_predictions
from sdm.indicators import run_indicators

log = log_to(snakemake.log[0])
scenario, dispersal = snakemake.wildcards.run.rsplit("_", 1)
current, future = run_predictions(snakemake.input, scenario, snakemake.params.prediction,
                                  snakemake.params.device, snakemake.threads)
out_dir = Path(snakemake.output.zarr).parent
written = {str(p) for p in run_indicators(current, future, scenario, dispersal, out_dir,
                                          status=snakemake.input.get("status"),
                                          current_status=snakemake.input.get("current_status"))}
log.info("wrote %s", sorted(written))
declared = [str(Path(p)) for p in snakemake.output if not str(p).endswith(".zarr")]
missing = [p for p in declared if p not in written]
if missing:
    if any(p.endswith("mess.tif") for p in missing):
        raise RuntimeError(f"no MESS layer for {snakemake.wildcards.run}: the model or the predictions predate it "
                           "(no reference_quantiles in the checkpoint); rerun them: snakemake --forcerun train_sdm")
    raise RuntimeError(f"indicators of {snakemake.wildcards.run}: declared layer(s) not written: {missing}")
