"""Climate rasters: read GeoTIFF / NetCDF sources, harmonise variable names, put them on the grid, store cubes.

A cube is an ``xr.DataArray`` named ``climate`` with dims (``variable``, ``y``, ``x``), float32, NaN = no data,
and a CRS (rioxarray ``spatial_ref``). On disk it is a Zarr store chunked in space.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import numpy as np
import rioxarray
import xarray as xr
from pyproj import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning

from sdm.bilinear import applies, axis_weights, bilinear, shifted, source_span
from sdm.progress import shown
from sdm.storage import replacing, write_zarr

log = logging.getLogger(__name__)

RASTER_SUFFIXES = (".tif", ".tiff", ".nc", ".nc4", ".vrt")


def harmonise_name(name: str) -> str:
    """Canonical variable name: ``bio_1``, ``bio01``, ``BIO1``, ``wc2.1_10m_bio_1`` -> ``bio1``.

    Names that are not bioclim variables are lower-cased with separators normalised (``Soil Type`` -> ``soil_type``).
    """
    stem = Path(str(name)).name
    for suffix in RASTER_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    match = re.search(r"bio(?:clim)?[_\-\s]?0*(\d{1,2})$", stem, flags=re.IGNORECASE)
    # CHELSA puts the variable first and the period after it: CHELSA_bio1_1981-2010_V.2.1 -> bio1
    match = match or re.search(r"(?<![a-z])bio(?:clim)?[_\-]?0*(\d{1,2})(?![0-9a-z])", stem, flags=re.IGNORECASE)
    if match:
        return f"bio{int(match.group(1))}"
    return re.sub(r"[^0-9a-z]+", "_", stem.lower()).strip("_")


def source_files(source: str | Path | list) -> list[Path]:
    """Expand a climate source (a file, a list of files, or a directory of rasters) into files, checked to exist."""
    if isinstance(source, (list, tuple)):
        files = [Path(s) for s in source]
    else:
        source = Path(source)
        if source.is_dir():
            files = sorted(p for p in source.iterdir() if p.suffix.lower() in RASTER_SUFFIXES)
            if not files:
                raise ValueError(f"{source}: directory holds no raster ({', '.join(RASTER_SUFFIXES)})")
        else:
            files = [source]
    for f in files:
        if not f.exists():
            raise FileNotFoundError(f"climate raster not found: {f}")
    return files


def _band_names(da: xr.DataArray, path: Path) -> list[str]:
    descriptions = da.attrs.get("long_name")
    n = da.sizes.get("band", 1)
    if isinstance(descriptions, (list, tuple)) and len(descriptions) == n and all(descriptions):
        return [str(d) for d in descriptions]
    if isinstance(descriptions, str) and n == 1 and descriptions:
        return [descriptions]
    if n == 1:
        return [path.name]
    if n == 19 and re.search(r"bioc|bioclim", path.stem, flags=re.IGNORECASE):
        return [f"bio{i + 1}" for i in range(n)]  # WorldClim CMIP6 'bioc' stacks: the 19 bioclim variables in order
    return [f"{path.stem}_band{i + 1}" for i in range(n)]


CATEGORICAL_HINT = re.compile(r"land.?cover|land.?use|soil|class|vegetation|biome|ecoregion|habitat|lithology|geology",
                              flags=re.IGNORECASE)
"""Names that, on an integer band, mark a categorical layer even when the config does not list it."""
COARSER = 1.01
"""The target grid counts as coarser than a source when its cells are wider by more than this factor."""


def cell_size_m(da: xr.DataArray) -> float:
    """Geometric mean side (metres) of a raster's cells at its centre (degrees converted at the centre latitude)."""
    transform = da.rio.transform(recalc=True)
    dx, dy = abs(transform.a), abs(transform.e)
    crs = CRS.from_user_input(da.rio.crs)
    if crs.is_geographic:
        lat = float(np.clip(np.mean(da.rio.bounds()[1::2]), -89.0, 89.0))
        return float(np.sqrt(dx * 111_320.0 * np.cos(np.radians(lat)) * dy * 110_574.0))
    unit = crs.axis_info[0].unit_conversion_factor
    return float(np.sqrt(dx * dy) * unit)


def resampling_for(source: xr.DataArray, target: xr.DataArray, categorical: bool) -> Resampling:
    """How to put ``source`` on ``target``'s grid: categorical layers by the most common class (mode) onto a
    coarser grid and the nearest cell otherwise, never interpolated; continuous layers by the mean of the covered
    cells (average) onto a coarser grid and bilinear interpolation onto a finer or equal one."""
    if CRS.from_user_input(source.rio.crs) == CRS.from_user_input(target.rio.crs):
        # one CRS: compare the cells in its units, not each at its own centre (a global source measured at the
        # equator against a northern target at 60 degrees read a wider target cell as a finer one)
        (sa, se), (ta, te) = ((abs(t.a), abs(t.e)) for t in (source.rio.transform(recalc=True),
                                                             target.rio.transform(recalc=True)))
        coarser = np.sqrt(ta * te) > COARSER * np.sqrt(sa * se)
    else:
        coarser = cell_size_m(target) > COARSER * cell_size_m(source)
    if categorical:
        return Resampling.mode if coarser else Resampling.nearest
    return Resampling.average if coarser else Resampling.bilinear


CATEGORICAL_ATTR = "categorical_variables"
"""The cube attribute listing its class layers (declared or hinted, :func:`categorical_variables`): training keeps
their classes for MESS."""


def categorical_variables(da: xr.DataArray, declared) -> list[str]:
    """The variables of a raster read by :func:`read_raster` to resample as classes: those ``declared`` (harmonised
    names, the config's ``climate.categorical``), and integer bands whose name hints at classes
    (:data:`CATEGORICAL_HINT`), logged so that the user can see it."""
    declared = {harmonise_name(v) for v in (declared or [])}
    names = [str(v) for v in da["variable"].values]
    integer = np.dtype(da.attrs.get("source_dtype", "float32")).kind in "iu"
    hinted = [n for n in names if integer and n not in declared and CATEGORICAL_HINT.search(n)]
    if hinted:
        log.info("treating integer band(s) %s as categorical (name and integer type); list them in "
                 "climate.categorical to make it explicit", hinted)
    return [n for n in names if n in declared or n in hinted]


def _on_grid(a: xr.DataArray, target: xr.DataArray, categorical: list[str],
             methods: dict[bool, Resampling] | None = None) -> xr.DataArray:
    """``a`` put on ``target``'s grid, each variable with :func:`resampling_for` (no-op when aligned); bilinear
    interpolation between grids of one CRS by :mod:`sdm.bilinear` (GDAL's arithmetic, 6x faster), any other by
    GDAL's warper.

    ``methods`` ({categorical: method}) fixes the methods, for a window of a grid: they are chosen on the whole
    grid and source, as cell sizes are measured at their centre."""
    if _same_grid(a, target):
        return a
    names = [str(v) for v in a["variable"].values]
    parts = []
    for is_categorical in (False, True):
        subset = [n for n in names if (n in categorical) == is_categorical]
        if subset:
            method = methods[is_categorical] if methods else resampling_for(a, target, is_categorical)
            axes = _bilinear_axes(a, target) if method == Resampling.bilinear else None
            if axes is None:
                # NaN is the source's no-data (read with mask_and_scale): declared so, GDAL's average and mode leave
                # it out of a coarse cell instead of making the whole cell NaN (15 % of the 1-degree land cells,
                # along the coasts, from the 0.5-degree ISIMIP rasters)
                source = a.sel(variable=subset).rio.write_nodata(np.nan, encoded=False)
                parts.append(source.rio.reproject_match(target, resampling=method))
            else:
                values = bilinear(np.asarray(a.sel(variable=subset).values), *axes)
                on_grid = xr.DataArray(values, dims=("variable", "y", "x"), coords={
                    "variable": subset, "y": target["y"].values, "x": target["x"].values})
                parts.append(on_grid.rio.write_crs(target.rio.crs, inplace=True).rio.write_transform(
                    target.rio.transform(recalc=True), inplace=True))
    return parts[0] if len(parts) == 1 else xr.concat(parts, dim="variable").sel(variable=names)


def _bilinear_axes(a: xr.DataArray, target: xr.DataArray) -> tuple | None:
    """The weights (:func:`sdm.bilinear.axis_weights`) of ``target``'s rows and columns in the whole of source
    ``a``, or None where :mod:`sdm.bilinear` does not apply (another CRS, a rotated grid: GDAL warps)."""
    if a.rio.crs is None or target.rio.crs is None or CRS.from_user_input(a.rio.crs) != CRS.from_user_input(
            target.rio.crs):
        return None
    source, grid = a.rio.transform(recalc=True), target.rio.transform(recalc=True)
    if not applies(source, grid, (a.sizes["y"], a.sizes["x"])):
        return None
    return (axis_weights(target["y"].values, source.f, source.e, a.sizes["y"]),
            axis_weights(target["x"].values, source.c, source.a, a.sizes["x"]))


def _unreadable(path: Path, error: Exception) -> ValueError:
    """The one-line error of a raster that cannot be read, naming the file."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ValueError(f"{path}: cannot read the raster (corrupt, truncated or not a raster): {first}")


def read_raster(path: Path, lazy: bool = False, nodata: float | None = None) -> xr.DataArray:
    """One raster file as (``variable``, ``y``, ``x``) float32 with harmonised variable names and NaN no-data;
    ``attrs["source_dtype"]`` keeps the file's data type.

    ``nodata``: the value that means no data in a file that declares none (config ``climate.nodata``; compared with
    the values as read, after the file's scale and offset; for NetCDF, in variables without ``_FillValue`` or
    ``missing_value``); a file's own no-data value always wins. Masked now, or,
    when ``lazy``, as each window is read (``attrs["undeclared_nodata"]``).

    ``lazy``: the data stay in the file, read window by window when indexed, and keep the file's decoded type (cast
    to float32 per window: a cast of the lazy array would read the whole file); a truncated file then fails when a
    window is read (:func:`write_climate_cube`). Otherwise they are read now, so that a truncated file fails here,
    naming it."""
    if path.suffix.lower() in (".nc", ".nc4"):
        # chunks={}: dask-backed, so that stacking the file's variables stays lazy
        ds = xr.open_dataset(path, decode_coords="all", **({"chunks": {}} if lazy else {}))
        arrays = []
        for name, var in ds.data_vars.items():
            if {"x", "y"} <= set(var.dims) or {"lon", "lat"} <= set(var.dims) or {"longitude", "latitude"} <= set(var.dims):
                var = var.rename({d: r for d, r in (("lon", "x"), ("lat", "y"), ("longitude", "x"), ("latitude", "y")) if d in var.dims})
                var = var.squeeze(drop=True)
                if var.ndim != 2:
                    raise ValueError(f"{path}: variable '{name}' has dims {var.dims}; expected 2-D (y, x) layers")
                if nodata is not None and not {"_FillValue", "missing_value"} & set(var.encoding):
                    var = var.where(var != nodata)  # a variable that declares no missing value (climate.nodata)
                arrays.append(var.astype("float32").expand_dims(variable=[harmonise_name(name)]))
        if not arrays:
            raise ValueError(f"{path}: no 2-D (y, x) / (lat, lon) variable in the NetCDF file")
        da = xr.concat(arrays, dim="variable")
        if da.rio.crs is None:
            da = da.rio.write_crs("EPSG:4326")  # NetCDF climatologies on lat/lon without grid_mapping are WGS84
        return north_up(da.transpose("variable", "y", "x"))
    # mask_and_scale: integer rasters with a scale/offset (CHELSA: K x 10) come back in physical units
    try:
        da = rioxarray.open_rasterio(path, mask_and_scale=True)
        if not lazy:
            da.load()  # a truncated file opens, then fails on its data: fail here, naming the file
    except Exception as error:  # rasterio's RasterioIOError / CPLE_* errors
        raise _unreadable(path, error) from None
    if nodata is not None and da.rio.nodata is None and da.rio.encoded_nodata is None:
        da.attrs["undeclared_nodata"] = float(nodata)
        log.info("%s declares no no-data value: %g taken as no data (climate.nodata)", path, nodata)
    if da.rio.crs is None:
        raise ValueError(f"{path}: raster has no CRS; assign one (e.g. gdal_edit.py -a_srs EPSG:4326 {path.name})")
    names = [harmonise_name(n) for n in _band_names(da, path)]
    source_dtype = str(da.encoding.get("rasterio_dtype", da.encoding.get("dtype", da.dtype)))
    da = da.rename(band="variable").assign_coords(variable=names)
    if not lazy:  # astype reads the whole file: a lazy raster is cast window by window (_Layers.window)
        da = da.astype("float32")
    da.attrs["source_dtype"] = source_dtype
    if not lazy and "undeclared_nodata" in da.attrs:
        da = masked_undeclared(da)
    return north_up(da)


def masked_undeclared(values: xr.DataArray) -> xr.DataArray:
    """``values`` (float32) with the cells equal to ``attrs["undeclared_nodata"]`` as NaN (unchanged without it)."""
    value = values.attrs.get("undeclared_nodata")
    if value is None:
        return values
    return values.where(values != np.float32(value))


def north_up(da: xr.DataArray) -> xr.DataArray:
    """``da`` with its first row the northernmost (y decreasing), as GeoTIFFs are written and read: a NetCDF with
    latitudes ascending would otherwise make a south-up analysis grid and south-up outputs."""
    if da.sizes["y"] > 1 and float(da["y"][0]) < float(da["y"][-1]):
        flipped = da.isel(y=slice(None, None, -1))  # its transform from the flipped coordinates, not a stored one
        return flipped.rio.write_transform(flipped.rio.transform(recalc=True))
    return da


def _same_grid(a: xr.DataArray, b: xr.DataArray) -> bool:
    return (a.rio.crs == b.rio.crs and a.sizes["x"] == b.sizes["x"] and a.sizes["y"] == b.sizes["y"]
            and np.allclose(a.rio.transform(recalc=True), b.rio.transform(recalc=True)))


def read_climate(source, variables: list[str] | None = None, grid: xr.DataArray | None = None,
                 categorical: list[str] | None = None, nodata: float | None = None) -> xr.DataArray:
    """All rasters of a source as one (``variable``, ``y``, ``x``) array, on ``grid`` (default: the first file's).

    Each file is put on the grid directly, so a 1 km covariate keeps its detail on a 1 km grid even when it is
    listed after a coarse climate file; each variable with :func:`resampling_for` (``categorical``: names of class
    layers, see :func:`categorical_variables`). ``variables`` (harmonised names) selects and orders the
    variables; a missing one raises naming the source. ``nodata``: see :func:`read_raster`.
    """
    files = source_files(source)
    wanted = [harmonise_name(v) for v in variables] if variables else None
    arrays, classes = [], []
    for f in files:
        a = read_raster(f, nodata=nodata)
        if wanted is not None:
            a = a.sel(variable=[v for v in a["variable"].values if v in wanted])
            if a.sizes["variable"] == 0:
                continue
        target = grid if grid is not None else (arrays[0] if arrays else a)
        classes += categorical_variables(a, categorical)
        arrays.append(_on_grid(a, target, classes))
    if not arrays:
        raise ValueError(f"{source}: missing variable(s) {wanted}; none of its files has them")
    cube = _stack(arrays)
    order = _variable_order(source, [str(v) for v in cube["variable"].values], wanted)
    cube = cube if wanted is None else cube.sel(variable=order)
    cube.attrs[CATEGORICAL_ATTR] = [n for n in classes if n in order]
    return cube


def _variable_order(source, names: list[str], wanted: list[str] | None) -> list[str]:
    """The cube's variables: ``wanted`` (harmonised) when given, else ``names`` in file order; raises naming the
    source when a name appears twice or a wanted one is missing."""
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"{source}: variable(s) {duplicated} appear more than once after harmonising names")
    if wanted is not None:
        missing = [v for v in wanted if v not in names]
        if missing:
            raise ValueError(f"{source}: missing variable(s) {missing}; it has {names}")
        return list(wanted)
    return names


def _stack(arrays: list[xr.DataArray]) -> xr.DataArray:
    """The (variable, y, x) arrays of one grid as one array, on the first one's coordinates and CRS. Each array is
    released as soon as it is copied in (``arrays`` is emptied): peak memory is the cube plus the arrays, not the
    cube twice plus the arrays as with ``xr.concat`` (10 GB for a 19-variable 30 arc-second Europe)."""
    template = arrays[0]
    attrs = dict(template.attrs)
    for a in arrays[1:]:
        attrs = {k: v for k, v in attrs.items() if k in a.attrs and np.array_equal(a.attrs[k], v)}
    data = np.empty((sum(a.sizes["variable"] for a in arrays), template.sizes["y"], template.sizes["x"]),
                    dtype=np.result_type(*[a.dtype for a in arrays]))
    names, start = [], 0
    coords = {"y": template["y"].values, "x": template["x"].values}
    crs, transform = template.rio.crs, template.rio.transform(recalc=True)
    while arrays:
        a = arrays.pop(0)
        data[start:start + a.sizes["variable"]] = a.transpose("variable", "y", "x").values
        names += [str(v) for v in a["variable"].values]
        start += a.sizes["variable"]
        del a
    cube = xr.DataArray(data, dims=("variable", "y", "x"), coords={"variable": names, **coords}, attrs=attrs)
    if crs is not None:  # inplace: otherwise rioxarray copies the data
        cube.rio.write_crs(crs, inplace=True).rio.write_transform(transform, inplace=True)
    return cube


def to_grid(cube: xr.DataArray, grid: xr.DataArray, name: str = "climate", copy: bool = True) -> xr.DataArray:
    """Put ``cube`` on ``grid`` (bilinear; no-op when already aligned), NaN where any variable is missing.

    ``copy=False`` lets an aligned float32 cube's own array be masked in place (for a cube the caller owns)."""
    if not _same_grid(cube, grid):
        cube = cube.rio.reproject_match(grid, resampling=Resampling.bilinear)
        copy = False  # a new array already
    cube = cube.assign_coords(x=grid["x"].values, y=grid["y"].values).transpose("variable", "y", "x")
    values = np.asarray(cube.values)
    if copy or values.dtype != np.float32 or not values.flags.writeable:
        values = values.astype("float32")
    valid = np.isfinite(values).all(axis=0)
    if not bool(valid.any()):
        raise ValueError(f"{name}: the climate raster does not overlap the grid (no cell with data after reprojection)")
    if not valid.all():
        values[:, ~valid] = np.nan  # in place: no copy of the cube
    cube = cube.copy(data=values)
    cube.attrs = {}
    # inplace: rioxarray's write_crs / write_transform otherwise copy the data (the whole cube)
    cube.rio.write_crs(grid.rio.crs, inplace=True).rio.write_transform(grid.rio.transform(recalc=True), inplace=True)
    return cube.rename("climate")


def write_cube(cube: xr.DataArray, path: str | Path, chunk: int = 512) -> None:
    """Write a cube as Zarr v3 (no consolidated metadata), chunked (all variables, chunk, chunk)."""
    write_zarr(_cube_dataset(cube, chunk), path)


def _cube_dataset(cube: xr.DataArray, chunk: int) -> xr.Dataset:
    """The Dataset a cube is stored as: one variable ``climate``, chunked (all variables, chunk, chunk)."""
    return cube.rename("climate").to_dataset().chunk({"variable": -1, "y": chunk, "x": chunk})


def open_cube(path: str | Path) -> xr.DataArray:
    """Open a cube written by :func:`write_cube` (lazy, dask-backed) with its CRS."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"cube not found: {path}")
    ds = xr.open_zarr(path, consolidated=False, decode_coords="all")
    cube = ds["climate"]
    if cube.rio.crs is None:
        raise ValueError(f"{path}: cube has no CRS")
    return cube


def check_variables(cube: xr.DataArray, required: list[str], scenario: str) -> None:
    """Raise naming the scenario and the variables it lacks that the model was trained on."""
    have = [str(v) for v in cube["variable"].values]
    missing = [v for v in required if v not in have]
    if missing:
        raise ValueError(f"scenario '{scenario}' lacks variable(s) {missing} that the model uses; it has {have}")


def valid_mask(cube: xr.DataArray) -> np.ndarray:
    """bool (y, x): cells where every variable has data."""
    return np.asarray(np.isfinite(cube).all("variable").values)


__all__ = [
    "harmonise_name", "source_files", "read_raster", "read_climate", "to_grid", "write_cube", "open_cube",
    "check_variables", "valid_mask", "lazy_climate", "write_climate_cube",
]


def ingest_climate(source, name: str, grid: xr.DataArray | None = None,
                   variables: list[str] | None = None, categorical: list[str] | None = None,
                   nodata: float | None = None) -> xr.DataArray:
    """Read a scenario's rasters and put them on ``grid`` (the source's own grid when None) as a cube
    (``categorical``: class layers, resampled by mode or nearest cell, see :func:`read_climate`).

    Errors name the scenario: a missing variable, or a raster that does not overlap the grid.
    """
    try:
        cube = read_climate(source, variables, grid, categorical, nodata)
    except ValueError as error:
        raise ValueError(f"scenario '{name}': {error}") from None
    if grid is None:
        from sdm.grid import grid_of

        grid = grid_of(cube)
    on_grid = to_grid(cube, grid, name=f"scenario '{name}' ({source})", copy=False)  # read_climate's own array
    on_grid.attrs[CATEGORICAL_ATTR] = cube.attrs.get(CATEGORICAL_ATTR, [])  # as write_climate_cube lists them
    return on_grid


# --- out of core: the cube window by window ---------------------------------------------------------------------------

SOURCE_MARGIN = 2
"""Source cells read around a window's footprint beyond the resampling kernel (see :func:`_source_slices`)."""


class _Layers:
    """The files of a scenario opened lazily (data stay in the files), each with its variables to keep, its class
    layers, and its resampling methods chosen once on the whole grid (:func:`resampling_for` measures cells at
    the grid's centre: a window of a geographic grid would otherwise choose by its own latitude)."""

    def __init__(self, source, grid: xr.DataArray | None, variables: list[str] | None, categorical,
                 nodata: float | None = None):
        files = source_files(source)
        wanted = [harmonise_name(v) for v in variables] if variables else None
        self.files: list[_File] = []
        names = []
        for f in files:
            a = read_raster(f, lazy=True, nodata=nodata)
            if wanted is not None:
                a = a.sel(variable=[v for v in a["variable"].values if v in wanted])
                if a.sizes["variable"] == 0:
                    continue
            if grid is None:
                from sdm.grid import grid_of

                grid = grid_of(a)
            self.files.append(_File(f, a, grid, categorical_variables(a, categorical)))
            names += [str(v) for v in a["variable"].values]
        if not self.files:
            raise ValueError(f"{source}: missing variable(s) {wanted}; none of its files has them")
        self.names = _variable_order(source, names, wanted)
        self.grid = grid
        self.overlaps = False  # set by the first window with data (the grid overlaps the rasters)

    def window(self, rows: slice, cols: slice) -> np.ndarray:
        """(variable, rows, cols) float32 of the grid window, NaN where any variable is missing: each file's
        footprint of the window read from the file and put on the window (:meth:`_File.window`)."""
        if len(self.files) == 1 and self.files[0].names == self.names:
            data = self.files[0].window(self.grid, rows, cols)
        else:
            parts = {}
            for file in self.files:
                parts.update(zip(file.names, file.window(self.grid, rows, cols)))
            data = np.stack([parts.pop(n) for n in self.names]).astype("float32", copy=False)
        valid = np.isfinite(data).all(axis=0)
        if not valid.all():
            np.copyto(data, np.float32(np.nan), where=~valid)
        self.overlaps = self.overlaps or bool(valid.any())
        return data


class _File:
    """One source file of :class:`_Layers`, opened lazily: its variables, class layers, resampling methods (chosen
    once on the whole grid) and, where :mod:`sdm.bilinear` interpolates its continuous variables, their weights
    on the whole grid (so that a window's values do not depend on the window)."""

    def __init__(self, path: Path, a: xr.DataArray, grid: xr.DataArray, classes: list[str]):
        self.path, self.a, self.classes = path, a, classes
        self.names = [str(v) for v in a["variable"].values]
        self.methods = {c: resampling_for(a, grid, c) for c in (False, True)}
        self.on_grid = _same_grid(a, grid)
        # the resampling kernel reaches about one target cell into the source
        self.margin = int(np.ceil(cell_size_m(grid) / cell_size_m(a))) + SOURCE_MARGIN
        continuous = [n for n in self.names if n not in classes]
        self.axes = None
        if continuous and not self.on_grid and self.methods[False] == Resampling.bilinear:
            self.axes = _bilinear_axes(a, grid)
        self.interpolated = continuous if self.axes is not None else []

    def _load(self, subset: xr.DataArray) -> xr.DataArray:
        try:
            return masked_undeclared(subset.load().astype("float32"))
        except Exception as error:  # a truncated file fails on the windows it lacks
            raise _unreadable(self.path, error) from None

    def window(self, grid: xr.DataArray, rows: slice, cols: slice) -> np.ndarray:
        """(variable, rows, cols) float32 of this file's variables on the grid window."""
        target = grid.isel(y=rows, x=cols)
        shape = (target.sizes["y"], target.sizes["x"])
        if self.on_grid:
            return self._load(self.a.isel(y=rows, x=cols)).transpose("variable", "y", "x").values
        values = np.empty((len(self.names), *shape), dtype="float32")
        if self.interpolated:
            row_weights, col_weights = (tuple(w[part] for w in axis) for axis, part in zip(self.axes, (rows, cols)))
            ys, xs = source_span(row_weights), source_span(col_weights)
            where = [self.names.index(n) for n in self.interpolated]
            if ys.start == ys.stop or xs.start == xs.stop:  # the window lies outside this file
                values[where] = np.nan
            else:
                subset = self._load(self.a.sel(variable=self.interpolated).isel(y=ys, x=xs))
                weights = shifted(row_weights, ys.start), shifted(col_weights, xs.start)
                source = subset.transpose("variable", "y", "x").values
                if self.interpolated == self.names:  # every variable: straight into the window's array
                    bilinear(source, *weights, out=values)
                else:
                    values[where] = bilinear(source, *weights)
        rest = [n for n in self.names if n not in self.interpolated]
        if rest:
            ys, xs = _source_slices(self.a, target, self.margin)
            where = [self.names.index(n) for n in rest]
            if ys is None:  # the window lies outside this file
                values[where] = np.nan
            else:
                subset = self._load(self.a.sel(variable=rest).isel(y=ys, x=xs))
                values[where] = _on_grid(subset, target, self.classes, self.methods).transpose(
                    "variable", "y", "x").values
        return values


def _source_slices(a: xr.DataArray, target: xr.DataArray, margin: int) -> tuple[slice | None, slice | None]:
    """Rows and columns of source ``a`` under ``target``'s footprint (its bounds in ``a``'s CRS, densified edges)
    plus ``margin`` cells; (None, None) when they do not meet."""
    from rasterio.warp import transform_bounds

    left, bottom, right, top = target.rio.bounds()
    if CRS.from_user_input(target.rio.crs) != CRS.from_user_input(a.rio.crs):
        left, bottom, right, top = transform_bounds(target.rio.crs, a.rio.crs, left, bottom, right, top,
                                                    densify_pts=21)
    if not np.isfinite([left, bottom, right, top]).all():  # the window lies partly outside the CRS's domain
        return slice(None), slice(None)
    out = []
    for coord, low, high in ((a["y"].values, bottom, top), (a["x"].values, left, right)):
        step = abs(float(coord[1] - coord[0])) if len(coord) > 1 else 0.0
        inside = np.flatnonzero((coord >= low - margin * step) & (coord <= high + margin * step))
        if len(inside) == 0:
            return None, None
        out.append(slice(int(inside[0]), int(inside[-1]) + 1))
    return out[0], out[1]


def lazy_climate(source, grid: xr.DataArray | None = None, variables: list[str] | None = None,
                 categorical: list[str] | None = None, chunk: int = 512, nodata: float | None = None) -> xr.DataArray:
    """A scenario's cube as a Dask array of (all variables, ``chunk``, ``chunk``) windows of ``grid`` (the first
    file's grid when None), each read from the files and put on the grid when computed: :func:`ingest_climate`'s
    cube, which that holds in memory, computed window by window (without its overlap check).

    Values equal :func:`ingest_climate`'s where the grid is the source's or an affine resampling of it (to the
    last bit of bilinear weights); across CRSs, GDAL sizes its downsampling kernels per processing chunk (as it
    does for its own chunks within one large warp), so a windowed cube differs by a fraction of the change
    between neighbouring cells, and a class layer at a few cells where the mode's vote is close.
    """
    return _lazy_climate(_Layers(source, grid, variables, categorical, nodata), chunk)


def _lazy_climate(layers: _Layers, chunk: int) -> xr.DataArray:
    import dask.array

    grid = layers.grid
    shape = (len(layers.names), grid.sizes["y"], grid.sizes["x"])
    data = dask.array.from_array(_Windows(layers, shape), chunks=(shape[0], chunk, chunk), lock=False,
                                 name=False,  # a random name: the windows are not a function of hashable inputs
                                 meta=np.empty((0, 0, 0), dtype="float32"))
    cube = xr.DataArray(data, dims=("variable", "y", "x"),
                        coords={"variable": layers.names, "y": grid["y"].values, "x": grid["x"].values})
    cube.rio.write_crs(grid.rio.crs, inplace=True).rio.write_transform(grid.rio.transform(recalc=True),
                                                                       inplace=True)
    return cube.rename("climate")


class _Windows:
    """Array-like (variable, y, x) whose slices are computed by :meth:`_Layers.window` (for ``dask.array``)."""

    def __init__(self, layers: _Layers, shape: tuple[int, int, int]):
        self.layers, self.shape, self.dtype, self.ndim = layers, shape, np.dtype("float32"), 3

    def __getitem__(self, key):
        variables, rows, cols = key
        return self.layers.window(rows, cols)[variables]


def write_climate_cube(source, name: str, path: str | Path, grid: xr.DataArray | None = None,
                       variables: list[str] | None = None, categorical: list[str] | None = None,
                       chunk: int = 512, nodata: float | None = None) -> xr.DataArray:
    """:func:`ingest_climate` then :func:`write_cube`, out of core: each (``chunk`` x ``chunk``) window of the
    grid is read from the files, put on the grid, masked and written on its own (:func:`lazy_climate`), so peak
    memory is a few windows (Dask's threads) whatever the grid. Same errors as :func:`ingest_climate`; the store
    appears at ``path`` only once complete (:func:`sdm.storage.replacing`). Returns the written cube, opened lazily.
    """
    try:
        layers = _Layers(source, grid, variables, categorical, nodata)
    except ValueError as error:
        raise ValueError(f"scenario '{name}': {error}") from None
    cube = _lazy_climate(layers, chunk)
    cube.attrs[CATEGORICAL_ATTR] = [n for n in layers.names if any(n in f.classes for f in layers.files)]
    with replacing(path) as partial:
        try:
            with warnings.catch_warnings():
                # rasterio silences this for its in-memory warp datasets with catch_warnings, which is not
                # thread-safe: under Dask's threads the silenced warning leaks out; silence it around the threads
                warnings.filterwarnings("ignore", message="Dataset has no geotransform, gcps, or rpcs",
                                        category=NotGeoreferencedWarning)
                with shown(f"ingest {name}"):
                    write_zarr(_cube_dataset(cube, chunk), partial, mode="w-")
        except ValueError as error:
            raise ValueError(f"scenario '{name}': {error}") from None
        if not layers.overlaps:
            raise ValueError(f"scenario '{name}' ({source}): the climate raster does not overlap the grid (no cell "
                             f"with data after reprojection)")
    return open_cube(path)
