# Extinction-risk indicators from occurrences and climate rasters. See README.md and workflow/schemas/.
from snakemake.utils import min_version

min_version("9.0")

# A --configfile replaces the demo config instead of being merged into it, so no demo input leaks into a user's run.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/sdm.smk"
include: "workflow/rules/iucn.smk"
include: "workflow/rules/indicators.smk"
include: "workflow/rules/maps.smk"


rule all:
    input:
        all_outputs(),
