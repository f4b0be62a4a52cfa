"""Per-cell indicators of an assemblage: richness, threatened species, the most threatened status, their change.

Inputs are predicted presence (bool, ``species``, ``y``, ``x``, possibly lazy) and a status per species (LC..CR).
Outputs are float32 layers (``y``, ``x``) with NaN outside the data, written as GeoTIFF (QGIS) and Zarr, with the
scenario's MESS extrapolation layer (``mess``, :mod:`sdm.novelty`) beside them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from sdm.codes import NODATA
from sdm.packed import PRESENCE_BITS, any_present, count_present, pack_presence, species_words
from sdm.progress import shown
from sdm.storage import dask_blocks, gdal_write_env, replacing, write_zarr
from sdm.redlist import CATEGORIES, CATEGORY_CODE, THREATENED

log = logging.getLogger(__name__)

LAYERS = ("richness", "threatened_count", "threatened_share", "most_threatened")
"""Indicators of one assemblage; their ``*_change`` versions are future minus current."""

COG_BLOCK = 256
"""Tile side (cells) of the indicator GeoTIFFs; GDAL's COG driver adds overviews down to one tile."""
CATEGORICAL_LAYERS = frozenset({"most_threatened"})
"""Layers that hold category codes: their overviews take the most common code, never a mean."""

CHANGE_LAYERS = ("richness", "threatened_count", "threatened_share")
"""Indicators whose change (future minus current) is a layer of a future run."""

UNITS = {
    "richness": "number of species",
    "threatened_count": "number of species (VU, EN, CR)",
    "threatened_share": "proportion of the assemblage (0-1)",
    "most_threatened": "category code (0 LC, 1 NT, 2 VU, 3 EN, 4 CR)",
}


def layer_names(future: bool, with_status: bool) -> list[str]:
    """The GeoTIFF layers :func:`run_indicators` writes for a run (the workflow declares them as outputs):
    richness, with a Red List the threatened layers, for a future run the ``*_change`` layers, and ``mess``."""
    return _run_layer_names(future, with_status) + ["mess"]


def scenario_presence(current: xr.DataArray, future: xr.DataArray | None, dispersal: str) -> xr.DataArray:
    """Presence under a scenario: ``full`` dispersal -> the future range; ``none`` -> future range inside the
    current one. ``future=None`` is the current climate."""
    if future is None:
        return current
    if dispersal == "full":
        return future
    if dispersal == "none":
        return future & current
    raise ValueError(f"dispersal must be 'full' or 'none', got '{dispersal}'")


def _status_arrays(species: list[str], status: pd.Series | None) -> tuple[np.ndarray, list] | None:
    """(words of the threatened species, [(rank, words of its species), ...] from the highest rank down; rank is
    category code + 1) per :func:`sdm.packed.species_words`, or None without a status table. Species with no or an
    unknown category are neither threatened nor ranked."""
    if status is None:
        return None
    aligned = status.reindex(species)
    rank = (aligned.map(CATEGORY_CODE).fillna(-1).to_numpy() + 1).astype("int16")
    ranks = [(int(r), species_words(rank == r)) for r in np.unique(rank[rank > 0])[::-1]]
    return species_words(aligned.isin(THREATENED).to_numpy()), ranks


def _assemblage_block(present: np.ndarray, status: tuple | None) -> np.ndarray:
    """float32 (layer, y, x) indicators of one block of presence (packed, ``uint64`` word x y x:
    :func:`sdm.packed.pack_presence`): :data:`LAYERS` with a status, richness alone without; not yet masked to the
    cells with data."""
    counts = count_present(present)
    richness = counts.astype("float32")
    if status is None:
        return richness[None]
    threatened, ranks = status
    threatened_count = count_present(present, threatened).astype("float32")
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(counts > 0, threatened_count / richness, np.nan).astype("float32")
    most = np.full(counts.shape, np.nan, dtype="float32")
    for r, words in ranks:  # the highest category present in a cell wins
        here = any_present(present, words) & np.isnan(most)
        most[here] = r - 1
    return np.stack([richness, threatened_count, share, most])


def _indicators_block(valid: np.ndarray, current: np.ndarray, *futures: np.ndarray, runs: tuple, current_status,
                      present: bool, packed: bool) -> np.ndarray:
    """Every layer of every run of one block, stacked in :func:`_run_layer_names` order: the present's layers when
    ``present``, then for each future scenario (``futures``: its presence block; ``runs``: per scenario its
    (dispersal, status arrays)) each run's layers and their change against the present. NaN outside ``valid``
    ((1, y, x) cells with data). Presence blocks are bool (species, y, x), or with ``packed`` already words
    (:func:`sdm.packed.pack_presence`), as the indicators count them: 64 species per operation."""
    if not valid.any():  # no cell with data (sea): every layer NaN, no pass over the species
        n_out = (len(LAYERS) if current_status is not None else 1) * present + sum(
            len(LAYERS) + len(CHANGE_LAYERS) if status is not None else 2 for scenario_runs in runs
            for _, status in scenario_runs)
        return np.full((n_out, *valid.shape[1:]), np.nan, dtype="float32")
    if not packed:
        current, futures = pack_presence(current), [pack_presence(future) for future in futures]
    now = _assemblage_block(current, current_status)
    out = [now] if present else []
    for future, scenario_runs in zip(futures, runs):
        for dispersal, status in scenario_runs:
            layers = _assemblage_block(scenario_presence(current, future, dispersal), status)
            n_change = len(CHANGE_LAYERS) if status is not None else 1
            out += [layers, layers[:n_change] - now[:n_change]]
    stacked = np.concatenate(out)
    stacked[:, ~valid[0]] = np.nan
    return stacked


def _run_layer_names(future: bool, with_status: bool) -> list[str]:
    names = list(LAYERS) if with_status else ["richness"]
    if future:
        names += [f"{name}_change" for name in (CHANGE_LAYERS if with_status else ("richness",))]
    return names


def _attrs(name: str) -> dict:
    base = name.removesuffix("_change")
    if name == base:
        return {"long_name": name.replace("_", " "), "units": UNITS[name]}
    return {"long_name": f"change in {base.replace('_', ' ')} vs current", "units": UNITS[base]}


def run_layers(current: xr.DataArray, future: xr.DataArray | None, valid: xr.DataArray, statuses: dict,
               current_status: pd.Series | None) -> dict[str, xr.Dataset]:
    """Indicator layers of every run of one scenario (:func:`all_run_layers`). ``future`` None: the present, one
    run (``statuses`` names it). ``statuses``: dispersal -> status per species, or dispersal -> None for richness
    alone (no Red List). Returns dispersal -> layers."""
    if future is None:
        (name,) = statuses
        return {name: all_run_layers(current, {}, valid, {}, current_status, present=True)["current"]}
    layers = all_run_layers(current, {"future": future}, valid, {"future": statuses}, current_status, present=False)
    return {dispersal: layers[("future", dispersal)] for dispersal in statuses}


def _valid_cells(predictions: xr.Dataset) -> xr.DataArray:
    """(y, x) bool: the cells with data of a prediction store, a decoded prediction Dataset (from one species'
    codes: decoding the suitability of every species, a Dask chunk being all of them, to look at one cost 7 % of
    the fused pass on the 1/16 global band) or a presence store."""
    valid = predictions["valid"] if PRESENCE_BITS in predictions else \
        predictions["suitability_code"].isel(species=0) != NODATA
    return valid.drop_vars([c for c in valid.coords if c not in ("y", "x")])


def all_run_layers(current: xr.DataArray, futures: dict[str, xr.DataArray], valid: xr.DataArray,
                   statuses: dict[str, dict], current_status: pd.Series | None, present: bool = True,
                   species: list[str] | None = None) -> dict:
    """Indicator layers (float32, ``y``, ``x``, NaN outside ``valid``) of the present (when ``present``) and of
    every run of every future scenario, lazily, from one Dask task per block of cells: each block of the presence
    cubes (bool ``species``, ``y``, ``x``; in fused mode a model forward) is read once for every layer of every
    run and released, so memory stays at a few blocks whatever the grid, and the present's block serves its own
    layers and every scenario's change. With ``species`` (their names in bit order) the presence cubes are packed
    (``uint64`` ``word``, ``y``, ``x``; the presence stores of :func:`sdm.packed.presence_store`).

    ``futures``: scenario -> presence. ``statuses``: scenario -> dispersal -> status per species (LC..CR; other
    values or missing species count as not threatened and unranked), or None for richness alone (no Red List).
    Returns ``"current"`` -> the present's layers and (scenario, dispersal) -> a future run's layers with their
    ``*_change`` against the present.
    """
    import dask.array as da

    from sdm.features import match_coords

    packed = species is not None
    species = species if packed else [str(s) for s in current["species"].values]
    # blocks pair the species and cells by position: a future listing them in another order must not pass
    futures = {name: match_coords(future, current, f"{name} presence") for name, future in futures.items()}
    with_status = current_status is not None
    runs = tuple(tuple((d, _status_arrays(species, st)) for d, st in statuses[name].items()) for name in futures)
    keys = (["current"] if present else []) + [(name, d) for name in futures for d in statuses[name]]
    names = {key: _run_layer_names(key != "current", with_status) for key in keys}
    spatial = current.chunks[1:] if current.chunks is not None else tuple((n,) for n in current.shape[1:])

    first_chunks = ((current.shape[0],), *spatial)
    arrays = [dask_blocks(valid.expand_dims("one"), ((1,), *spatial)), dask_blocks(current, first_chunks)]
    arrays += [dask_blocks(future.transpose(*current.dims), first_chunks) for future in futures.values()]
    n_out = sum(len(n) for n in names.values())
    stacked = da.map_blocks(_indicators_block, *arrays, runs=runs,
                            current_status=_status_arrays(species, current_status), present=present, packed=packed,
                            chunks=((n_out,), *spatial), dtype="float32", meta=np.empty((0, 0, 0), "float32"))
    grid = valid.drop_vars([c for c in valid.coords if c not in ("y", "x")])
    out, i = {}, 0
    for key in keys:
        layers = {}
        for name in names[key]:
            layers[name] = grid.copy(data=stacked[i]).rename(name).assign_attrs(_attrs(name))
            i += 1
        out[key] = xr.Dataset(layers)
    return out


def indicator_layers(presence: xr.DataArray, status: pd.Series, valid: xr.DataArray) -> xr.Dataset:
    """Indicators of one assemblage (:data:`LAYERS`, lazy).

    ``presence``: bool (species, y, x); ``status``: category per species (LC..CR; other values or missing species
    count as not threatened and not in the most-threatened layer); ``valid``: bool (y, x) cells with data.
    """
    return run_layers(presence, None, valid, {"run": status}, status)["run"]


def write_indicators(indicators: xr.Dataset, out_dir: str | Path, crs) -> list[Path]:
    """One Cloud-Optimised GeoTIFF per layer (float32, NaN no data, CRS set, tiled with overviews) and
    ``indicators.zarr`` under ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with shown(f"indicators {out_dir.name}"):
        indicators = indicators.compute().rio.write_crs(crs)
    paths = [write_layer(layer, out_dir / f"{name}.tif", str(name)) for name, layer in indicators.data_vars.items()]
    write_zarr(indicators, out_dir / "indicators.zarr")
    return paths


def read_layer(path: str | Path) -> xr.DataArray:
    """One indicator GeoTIFF (as :func:`write_layer` writes it) as a float (``y``, ``x``) array with its CRS, NaN
    for no data, loaded."""
    import rioxarray

    if not Path(path).is_file():
        raise FileNotFoundError(f"indicator layer not found: {path}")
    with rioxarray.open_rasterio(path, masked=True) as src:
        return src.squeeze("band", drop=True).load()


def write_layer(layer: xr.DataArray, path: str | Path, name: str, rows_per_write: int = 4 * COG_BLOCK) -> Path:
    """One layer (``y``, ``x``, CRS set; in memory or lazy, e.g. from a Zarr store) as a Cloud-Optimised GeoTIFF:
    float32, NaN no data, tiled, with overviews (QGIS and web viewers open large grids fast); the overviews of a
    category code take the most common code, the others the mean. The band's description is ``name`` and its unit
    ``layer.attrs["units"]`` (also the ``units`` tag, with ``long_name``); a categorical layer
    (:data:`CATEGORICAL_LAYERS`) also gets the tag ``categories`` (the category of each code, comma-separated).
    Written under a partial name and renamed (a killed job leaves no half file).

    Streamed: ``rows_per_write`` rows at a time go into a tiled GeoTIFF beside the output, which GDAL's COG driver
    then copies block by block (with its overviews): memory is a band of rows and GDAL's cache, not the layer
    (the whole-layer write through rioxarray took 7.9 GB for a 5.8e7-cell layer of the 1/16 globe)."""
    import rasterio
    import rasterio.shutil
    from rasterio.windows import Window

    path = Path(path)
    layer = layer.transpose("y", "x")
    height, width = layer.sizes["y"], layer.sizes["x"]
    # the intermediate file is read once: the fastest compression (ZSTD level 1; LZW took as long as the COG copy)
    profile = {"driver": "GTiff", "dtype": "float32", "count": 1, "height": height, "width": width,
               "crs": layer.rio.crs, "transform": layer.rio.transform(), "nodata": np.nan, "tiled": True,
               "blockxsize": COG_BLOCK, "blockysize": COG_BLOCK, "compress": "zstd", "zstd_level": 1,
               "BIGTIFF": "IF_SAFER"}
    units = layer.attrs.get("units", "")
    tags = {"units": units} | ({"categories": ",".join(CATEGORIES)} if name in CATEGORICAL_LAYERS else {})
    if layer.attrs.get("long_name"):
        tags["long_name"] = layer.attrs["long_name"]
    with replacing(path) as partial, gdal_write_env():
        tiled = Path(partial).with_name(Path(partial).name + ".tiled.tif")
        try:
            with rasterio.open(tiled, "w", **profile) as dst:
                for top in range(0, height, rows_per_write):
                    rows = layer.isel(y=slice(top, top + rows_per_write))
                    dst.write(np.asarray(rows.values, dtype="float32"), 1,
                              window=Window(0, top, width, rows.sizes["y"]))
                dst.update_tags(**tags)
                dst.set_band_description(1, name)  # QGIS and gdalinfo show the layer's name and unit per band
                if units:
                    dst.set_band_unit(1, units)
            rasterio.shutil.copy(tiled, partial, driver="COG", compress="DEFLATE", blocksize=COG_BLOCK,
                                 overview_resampling="MODE" if name in CATEGORICAL_LAYERS else "AVERAGE",
                                 BIGTIFF="IF_SAFER", NUM_THREADS=str(len(os.sched_getaffinity(0))))
        finally:
            tiled.unlink(missing_ok=True)
    return path


def run_name(key) -> str:
    """The workflow's name of a run key of :func:`all_indicators` (``"current"`` or (scenario, dispersal))."""
    return key if isinstance(key, str) else f"{key[0]}_{key[1]}"


def read_status(path) -> pd.Series:
    """The ``status`` column of a per-run status table, indexed by species."""
    return pd.read_csv(path).set_index("species")["status"]


def run_indicators(current, future, scenario: str, dispersal: str, out_dir, status=None,
                   current_status=None) -> list[Path]:
    """Indicators of one run from predictions and status tables; writes GeoTIFFs + Zarr.

    ``current`` / ``future`` are prediction stores (paths) or decoded prediction Datasets (e.g. the lazy ones of
    fused mode). Without a status table (no Red List in the config) only richness (and its change) is written.
    ``mess.tif`` is the MESS of the scenario's climate (see :func:`extrapolation`), when the predictions hold it.
    """
    return scenario_indicators(current, future, scenario, {dispersal: out_dir},
                               {dispersal: status} if status is not None else None, current_status)[dispersal]


def scenario_indicators(current, future, scenario: str, out_dirs: dict[str, str | Path], statuses=None,
                        current_status=None) -> dict[str, list[Path]]:
    """Indicators of every run of one scenario (``out_dirs``: dispersal -> folder; ``statuses``: dispersal ->
    status table, or None without a Red List) from one pass over the predictions (:func:`all_indicators`).
    Returns dispersal -> the files written (see :func:`run_indicators`)."""
    if scenario == "current":
        (dispersal,) = out_dirs
        return {dispersal: all_indicators(current, {}, {"current": out_dirs[dispersal]}, None if statuses is None
                                          else {"current": statuses[dispersal]}, current_status)["current"]}
    written = all_indicators(current, {scenario: future}, {(scenario, d): out for d, out in out_dirs.items()},
                             None if statuses is None else {(scenario, d): st for d, st in statuses.items()},
                             current_status)
    return {d: written[(scenario, d)] for d in out_dirs}


def all_indicators(current, futures: dict, out_dirs: dict, statuses: dict | None = None,
                   current_status=None) -> dict:
    """Indicators of the present (when ``out_dirs`` has ``"current"``) and of future runs ((scenario, dispersal)
    keys of ``out_dirs``, each a folder), from one pass over the predictions: every run's layers are computed in
    the same Dask computation, so each chunk of the present's predictions and of every scenario's (in fused mode,
    each model forward) is made once for all of them. ``current`` / ``futures`` (scenario -> predictions) are
    prediction stores (paths), decoded prediction Datasets (the lazy ones of fused mode) or the presence stores
    of fused mode's range pass (:func:`sdm.packed.open_presence_store`). ``statuses``: run key
    -> status table (a CSV path) and ``current_status`` the present's, or None without a Red List (richness
    alone). Each run also gets its scenario's MESS layer (:func:`extrapolation`). Returns run key -> files written.
    """
    from sdm.predict import open_predictions

    def opened(predictions):
        return predictions if isinstance(predictions, xr.Dataset) else open_predictions(predictions)

    current = opened(current)
    futures = {name: opened(ds) for name, ds in futures.items()}
    species = None
    if PRESENCE_BITS in current:  # presence stores of fused mode's range pass: packed presence
        species = [str(s) for s in current.attrs["species"]]
        for name, ds in futures.items():
            if [str(s) for s in ds.attrs.get("species", [])] != species:
                raise ValueError(f"presence store of {name}: its species differ from the present's; rerun the "
                                 "range pass: snakemake --forcerun range_sums")
        variable = PRESENCE_BITS
    else:
        variable = "presence"
    valid = _valid_cells(current)
    crs = current.rio.crs
    runs = {name: [key[1] for key in out_dirs if key != "current" and key[0] == name] for name in futures}
    if statuses is None:
        run_statuses, present_status = {name: dict.fromkeys(ds, None) for name, ds in runs.items()}, None
    else:
        run_statuses = {name: {d: read_status(statuses[(name, d)]) for d in ds} for name, ds in runs.items()}
        present_status = read_status(statuses["current"] if "current" in statuses else current_status)
    layers = all_run_layers(current[variable], {name: ds[variable] for name, ds in futures.items()}, valid,
                            run_statuses, present_status, present="current" in out_dirs, species=species)
    # a cell with no data in a scenario (its climate model's land mask) has none in that scenario's layers, rather
    # than an empty assemblage and a loss of every species
    layers = {key: run if key == "current" else
              run.where(_valid_cells(futures[key[0]]).variable.chunk({d: run.chunksizes[d] for d in ("y", "x")}))
              for key, run in layers.items()}
    sources = ({"current": current} if "current" in out_dirs else {}) | futures
    mess = {name: extrapolation(ds, name) for name, ds in sources.items()}
    # each scenario's MESS on the run's chunks: a store predicted with other chunk sides (another --cores) would not
    # write otherwise
    layers = {key: run.assign({name: layer.chunk({d: run.chunksizes[d] for d in ("y", "x")})
                               for name, layer in mess["current" if key == "current" else key[0]].items()})
              for key, run in layers.items()}
    return write_indicators_streamed(layers, {key: out_dirs[key] for key in layers}, crs)


BLOCKS_PER_WRITE = 8
"""Blocks of cells whose layers one Dask computation of :func:`write_indicators_streamed` writes at most. Given the
whole grid at once, the threaded scheduler computed many blocks of every layer before writing them: with three
runs on the 1/16 global band the job reached 9.4 GB, where two jobs of one scenario each stayed under 2.8 GB."""


def write_indicators_streamed(layers: dict, out_dirs: dict, crs, per_write: int | None = None
                              ) -> dict[str, list[Path]]:
    """Write several runs' (possibly lazy) indicator layers (``layers``: run key -> Dataset, ``out_dirs``: run key ->
    folder) chunk by chunk: first every run's ``indicators.zarr``, a region of :data:`BLOCKS_PER_WRITE` blocks at a
    time (``per_write``), every run's layers of a region in one Dask computation (the runs share each block of the
    predictions; memory is bounded by the region, not the grid), then each layer's Cloud-Optimised GeoTIFF from its
    store, one layer in memory at a time. Same files as :func:`write_indicators`."""
    from contextlib import ExitStack

    import dask

    from sdm.progress import batches_shown
    from sdm.storage import zarr_ready

    per_write = per_write or BLOCKS_PER_WRITE
    ready = {key: zarr_ready(run.rio.write_crs(crs)) for key, run in layers.items()}
    with ExitStack() as stack:
        partials = {key: stack.enter_context(replacing(Path(out_dirs[key]) / "indicators.zarr")) for key in layers}
        for key, run in ready.items():  # metadata and coordinates now, the layers region by region below
            run.to_zarr(partials[key], mode="w", consolidated=False, compute=False)
        first = next(iter(ready.values()))
        chunks = first.chunks if first.chunks else {dim: (first.sizes[dim],) for dim in ("y", "x")}
        y_edges, x_edges = np.cumsum((0, *chunks["y"])), np.cumsum((0, *chunks["x"]))
        regions = [(slice(int(y_edges[r]), int(y_edges[r + 1])),
                    slice(int(x_edges[c]), int(x_edges[min(c + per_write, len(x_edges) - 1)])))
                   for r in range(len(y_edges) - 1) for c in range(0, len(x_edges) - 1, per_write)]
        spatial = {key: run.drop_vars([v for v in run.variables if not {"y", "x"} & set(run[v].dims)])
                   for key, run in ready.items()}
        with batches_shown(f"indicators {', '.join(run_name(key) for key in layers)}") as done:
            for n, (rows, cols) in enumerate(regions):
                dask.compute(*[run.isel(y=rows, x=cols).to_zarr(partials[key], region={"y": rows, "x": cols},
                                                                 consolidated=False, compute=False)
                               for key, run in spatial.items()])
                done((n + 1) / len(regions))
    written = {}
    for d in layers:
        store = xr.open_zarr(Path(out_dirs[d]) / "indicators.zarr", consolidated=False, decode_coords="all")
        written[d] = []
        for name in layers[d].data_vars:
            layer = store[name].rio.write_crs(crs)  # lazy: written band of rows by band of rows
            layer.attrs = layers[d][name].attrs
            written[d].append(write_layer(layer, Path(out_dirs[d]) / f"{name}.tif", str(name)))
    return written


def extrapolation(predictions: xr.Dataset, scenario: str) -> dict[str, xr.DataArray]:
    """``{"mess": layer}``: the scenario's MESS layer (float32 (y, x), percent, < 0 = climate outside the training
    range), from a predictions store or the fused mode's lazy predictions; ``{}``, said in the log, when they have
    none (a checkpoint without the training climate's quantiles). The same for every dispersal assumption."""
    if "mess" not in predictions:
        log.warning("%s: no mess.tif: the predictions hold no MESS layer (the checkpoint has no reference_quantiles)",
                    scenario)
        return {}
    return {"mess": predictions["mess"].astype("float32")}
