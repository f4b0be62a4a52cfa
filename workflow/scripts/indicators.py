from pathlib import Path

from common import log_to
from sdm.fused import run_predictions
from sdm.indicators import all_indicators, scenario_indicators
from sdm.packed import open_presence_store

log = log_to(snakemake.log[0])
inputs, wildcards, params = snakemake.input, snakemake.wildcards, snakemake.params
zarrs = [snakemake.output.zarr] if isinstance(snakemake.output.zarr, str) else list(snakemake.output.zarr)
if "runs" in params.keys():  # fused: every run of every scenario in one pass over the range pass's presence stores
    scenarios, runs = list(params.scenarios), list(params.runs)
    predictions = {name: open_presence_store(path) for name, path in zip(scenarios, inputs.presence)}
    current = predictions.pop("current")
    keys = ["current" if run == "current_none" else tuple(run.rsplit("_", 1)) for run in runs]
    statuses = dict(zip(keys, inputs.statuses)) if len(inputs.statuses) else None
    written = all_indicators(current, predictions, {key: Path(z).parent for key, z in zip(keys, zarrs)}, statuses,
                             statuses["current"] if statuses else None)
    scenario = ", ".join(scenarios)
else:
    if "run" in wildcards.keys():  # the present: one run
        scenario, dispersals = "current", ["none"]
    else:  # a future scenario: all its runs in one pass
        scenario, dispersals = wildcards.scenario, list(params.dispersal)
    current, future = run_predictions(inputs, scenario, params.prediction, params.device, snakemake.threads)
    out_dirs = {d: Path(z).parent for d, z in zip(dispersals, zarrs)}
    # with a Red List: the present run's "status", or a future scenario's "status_{dispersal}" per run
    statuses = ({d: inputs.get(f"status_{d}", inputs.get("status")) for d in dispersals}
                if "current_status" in inputs.keys() else None)
    written = scenario_indicators(current, future, scenario, out_dirs, statuses, inputs.get("current_status"))
written = {str(p) for paths in written.values() for p in paths}
log.info("wrote %s", sorted(written))
declared = [str(Path(p)) for p in snakemake.output if not str(p).endswith(".zarr")]
missing = [p for p in declared if p not in written]
if missing:
    if any(p.endswith("mess.tif") for p in missing):
        raise RuntimeError(f"no MESS layer for {scenario}: the model or the predictions predate it "
                           "(no reference_quantiles in the checkpoint); rerun them: snakemake --forcerun train_sdm")
    raise RuntimeError(f"indicators of {scenario}: declared layer(s) not written: {missing}")
