from pathlib import Path

from common import log_to
from sdm.demo import generate_demo

log = log_to(snakemake.log[0])
demo = snakemake.params.demo
paths = generate_demo(Path(snakemake.output.occurrences).parent, rows=demo["rows"], cols=demo["cols"], n_species=demo["species"],
                      seed=demo["seed"], scenarios=demo["scenarios"], unassessed_share=demo["unassessed_share"])
log.info("demo world written: %s", {k: str(v) for k, v in paths.items()})
