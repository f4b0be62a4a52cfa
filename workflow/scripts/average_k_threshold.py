from common import log_to
from sdm.climate import open_cube
from sdm.fused import average_k_threshold, write_average_k

log = log_to(snakemake.log[0])
p = snakemake.params.prediction
threshold = average_k_threshold(open_cube(snakemake.input.cube), snakemake.input.model,
                                scenario=snakemake.wildcards.scenario, k=p["k"], chunk=p["chunk"],
                                batch_size=p["batch_size"], device=snakemake.params.device, threads=snakemake.threads,
                                sample_cells=p["average_k_cells"], precision=p["precision"])
write_average_k(threshold, snakemake.output[0])
log.info("average-K threshold of %s (chosen on %d valid cells): %s", snakemake.wildcards.scenario,
         threshold["cells"], threshold)
