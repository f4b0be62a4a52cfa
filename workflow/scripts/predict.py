from common import log_to
from sdm.climate import open_cube
from sdm.predict import predict_scenario

log = log_to(snakemake.log[0])
p = snakemake.params.prediction
predict_scenario(open_cube(snakemake.input.cube), snakemake.input.model, snakemake.output[0],
                 scenario=snakemake.wildcards.scenario, chunk=p["chunk"], batch_size=p["batch_size"],
                 assemblage=p["assemblage"], k=p["k"], workers=p["workers"], threads=snakemake.threads,
                 device=snakemake.params.device, scheduler=p["scheduler"], precision=p["precision"],
                 average_k_from=getattr(snakemake.input, "present", None))
