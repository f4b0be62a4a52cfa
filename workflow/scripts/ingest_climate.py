from common import log_to
from sdm.climate import open_cube, write_climate_cube
from sdm.grid import make_grid

log = log_to(snakemake.log[0])
scenario = snakemake.wildcards.scenario
grid_config = snakemake.params.grid
sources = snakemake.input.source
variables = snakemake.params.variables
if scenario != "current":
    reference = open_cube(snakemake.input.grid)
    grid, variables = reference.isel(variable=0, drop=True), [str(v) for v in reference["variable"].values]
elif grid_config.get("crs"):
    grid = make_grid(grid_config["crs"], grid_config["resolution"], grid_config["bounds"])
else:
    grid = None
# window by window: memory stays a few chunks whatever the grid
cube = write_climate_cube(sources if len(sources) > 1 else sources[0], scenario, snakemake.output[0], grid,
                          variables, snakemake.params.categorical, chunk=grid_config["chunk"],
                          nodata=snakemake.params.nodata)
log.info("cube %s: %s variables %s on %s x %s cells", scenario, cube.sizes["variable"],
         list(cube["variable"].values), cube.sizes["y"], cube.sizes["x"])
