import json

import pandas as pd
from common import log_to
from sdm.climate import open_cube
from sdm.train import run_training

log = log_to(snakemake.log[0])
metrics = run_training(  # the cube stays on disk: the training table is read from it chunk by chunk
    open_cube(snakemake.input.cube), pd.read_parquet(snakemake.input.occurrences), snakemake.params.sdm,
    model_path=snakemake.output.model, split_path=snakemake.output.split, threads=snakemake.threads,
)
with open(snakemake.output.metrics, "w") as f:
    json.dump(metrics, f, indent=2)
test = metrics["test"]
log.info("held-out mean AUC: deep SDM %s, baseline %s", test["deep_sdm"]["mean_auc"],
         test.get("baseline", {}).get("mean_auc"))
