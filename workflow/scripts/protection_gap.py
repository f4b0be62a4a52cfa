from common import log_to
from sdm.indicators import read_layer, write_layer
from sdm.protection import protection_gap
from sdm.threats import protected_fraction

log = log_to(snakemake.log[0])
threatened = read_layer(snakemake.input.threatened)
protected = protected_fraction(snakemake.input.protected, threatened, snakemake.params.band)
gap = protection_gap(threatened, protected).rio.write_crs(threatened.rio.crs)
write_layer(gap, snakemake.output[0], "threatened_unprotected")
log.info("%s: protection gap, %.1f unprotected threatened species-cells", snakemake.wildcards.run,
         float(gap.sum()))
