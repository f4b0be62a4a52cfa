"""Per-species features for the Red List status classifier.

Two families, joined by :func:`species_features`:

* occurrence features (:func:`occurrence_features`): record and site counts, extent of occurrence (EOO) and area
  of occupancy (AOO) as IUCN defines them, latitudinal range and centroid, spread of the sites (coarse cells,
  longitude span, distances to the centroid), the sampling effort around them, and the climate niche sampled at the
  occurrence cells;
* range features (:func:`range_features`): the predicted range under a scenario and dispersal assumption, its mean
  suitability, and its change relative to the current range.

Areas are km2, coordinates WGS84 degrees. One row per species, indexed by ``species``.
"""

from __future__ import annotations

from contextlib import ExitStack

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from sdm.codes import NODATA
from sdm.criteria import range_metrics
from sdm.progress import batches_shown
from sdm.storage import dask_blocks

DISPERSAL = ("full", "none")
"""Dispersal assumptions: ``full`` = the species reaches its whole future range, ``none`` = it keeps only the part
of its current range that stays suitable."""

OCCURRENCE_COLUMNS: tuple[str, ...] = ("species", "longitude", "latitude", "row", "col", "n_records")
"""Occurrence columns these features read (``x``/``y`` are part of the contract but not needed here)."""

OCCURRENCE_FEATURES: tuple[str, ...] = (
    "n_records",
    "n_sites",
    "eoo_km2",
    "aoo_km2",
    "n_locations_10km",
    "criterion_b_rank",
    "lat_min",
    "lat_max",
    "lat_span",
    "centroid_lon",
    "centroid_lat",
    "abs_centroid_lat",
    "tropical_share",
    "lon_span",
    "n_cells_1deg",
    "n_cells_10deg",
    "mean_dist_km",
    "max_dist_km",
    "records_per_site",
    "eoo_aoo_ratio",
    "effort_records_1deg",
    "effort_species_1deg",
    "effort_records_10deg",
    "effort_species_10deg",
    "effort_share_10deg",
)
RANGE_FEATURES: tuple[str, ...] = (
    "range_km2",
    "mean_suitability",
    "range_change",
    "range_loss",
    "current_range_km2",
)

BASE_FEATURE_COLUMNS: tuple[str, ...] = OCCURRENCE_FEATURES + ("range_km2", "mean_suitability")
"""Non-niche columns the classifier uses.

``range_change``, ``range_loss`` and ``current_range_km2`` are left out on purpose: the classifier is trained on
the current scenario, where ``range_change`` is 1, ``range_loss`` is 0 and ``current_range_km2`` equals
``range_km2``. The first two carry no information at training time, and a tree that happened to split on
``current_range_km2`` instead of its identical twin ``range_km2`` would be blind to the projected change. Future
change reaches the classifier through ``range_km2`` and ``mean_suitability``, and the status through criterion A3
(:func:`sdm.status.a3_category` on ``range_loss``).
"""

LOG_COLUMNS: frozenset[str] = frozenset(
    {
        "n_records",
        "n_sites",
        "eoo_km2",
        "aoo_km2",
        "n_locations_10km",
        "range_km2",
        "current_range_km2",
        "n_cells_1deg",
        "n_cells_10deg",
        "mean_dist_km",
        "max_dist_km",
        "records_per_site",
        "eoo_aoo_ratio",
        "effort_records_1deg",
        "effort_species_1deg",
        "effort_records_10deg",
        "effort_species_10deg",
    }
)
"""Counts, areas, distances and ratios: heavy-tailed, so the classifier sees ``log1p`` of them."""

COUNT_FEATURES: tuple[str, ...] = ("n_records", "n_sites", "eoo_km2", "aoo_km2", "n_locations_10km", "n_cells_1deg",
                                   "n_cells_10deg")
"""Occurrence features that are 0 (not missing) for a species without occurrences."""

TROPICS_LAT = 23.44
"""Latitude of the tropics of Cancer and Capricorn, degrees."""

EARTH_RADIUS_KM = 6371.0088
"""Mean Earth radius (IUGG), km, for great-circle distances."""

NICHE_PREFIXES: tuple[str, ...] = ("niche_mean_", "niche_sd_")

THREAT_FEATURES: tuple[str, ...] = ("protected_share_records", "protected_share_range")
"""Protected share (0..1) of a species' records and of its predicted range, when the config names a protected-area
layer (:mod:`sdm.threats`)."""
PRESSURE_SUFFIX = "_at_records"
"""Suffix of the per-species mean of a pressure layer at the records (``threats.pressures``)."""


def feature_columns(features: pd.DataFrame) -> list[str]:
    """The numeric columns of ``features`` used by the classifier, in a stable order.

    :data:`BASE_FEATURE_COLUMNS` that are present, then :data:`THREAT_FEATURES` and every ``{name}_at_records``
    pressure column that are present (they exist when the config names the layers), then every ``niche_mean_{v}``
    / ``niche_sd_{v}`` column in the frame's order (the niche columns depend on the cube's variables, hence a
    function rather than a fixed list).
    """
    base = [c for c in BASE_FEATURE_COLUMNS if c in features.columns]
    threats = [c for c in THREAT_FEATURES if c in features.columns]
    pressures = [c for c in features.columns if isinstance(c, str) and c.endswith(PRESSURE_SUFFIX)
                 and c not in THREAT_FEATURES]
    niche = [c for c in features.columns if isinstance(c, str) and c.startswith(NICHE_PREFIXES)]
    return base + threats + pressures + niche


FEATURE_COLUMNS = feature_columns
"""Alias: ``FEATURE_COLUMNS(features)`` gives the classifier's columns for a feature table."""


def _require_columns(frame: pd.DataFrame, columns, what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {', '.join(repr(c) for c in missing)}; has {list(frame.columns)}")


def _check_dispersal(dispersal: str) -> None:
    if dispersal not in DISPERSAL:
        raise ValueError(f"dispersal must be one of {DISPERSAL}, got {dispersal!r}")


def _circular_mean_deg(lon: pd.Series, by: pd.Series) -> pd.Series:
    """Mean longitude per group on the circle, so a species spanning the antimeridian is not centred at 0."""
    rad = np.deg2rad(lon.to_numpy(dtype=float))
    parts = pd.DataFrame({"s": np.sin(rad), "c": np.cos(rad)}, index=lon.index).groupby(by.to_numpy(), sort=True).mean()
    return pd.Series(np.rad2deg(np.arctan2(parts["s"], parts["c"])), index=parts.index)


def _lon_span_deg(lon: np.ndarray) -> float:
    """Shortest arc of longitude (degrees) covering all values: 360 minus the largest gap on the circle."""
    v = np.unique(np.mod(lon, 360.0))
    if len(v) < 2:
        return 0.0
    gaps = np.diff(np.append(v, v[0] + 360.0))
    return float(360.0 - gaps.max())


def _great_circle_km(lon1, lat1, lon2, lat2) -> np.ndarray:
    """Haversine distance (km) between points given in degrees."""
    lon1, lat1, lon2, lat2 = (np.deg2rad(np.asarray(a, dtype=float)) for a in (lon1, lat1, lon2, lat2))
    h = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2.0 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def _spread_and_effort(occ: pd.DataFrame, species: pd.Series, out: pd.DataFrame) -> pd.DataFrame:
    """Spread of each species' sites and the sampling effort around them (see :func:`occurrence_features`)."""
    lon = occ["longitude"].to_numpy(dtype=float)
    lat = occ["latitude"].to_numpy(dtype=float)
    sp = species.to_numpy()
    sites = pd.DataFrame(
        {
            "species": sp,
            "n": occ["n_records"].to_numpy(dtype=float),
            # Whole-degree cells; longitudes below 180 so that -180 and 180 share a cell.
            "c1": np.floor(np.mod(lon + 180.0, 360.0)) * 1000 + np.floor(lat + 90.0),
            "c10": np.floor(np.mod(lon + 180.0, 360.0) / 10) * 1000 + np.floor((lat + 90.0) / 10),
            "tropical": (np.abs(lat) <= TROPICS_LAT).astype(float),
            "dist": _great_circle_km(
                lon, lat, out["centroid_lon"].reindex(sp).to_numpy(), out["centroid_lat"].reindex(sp).to_numpy()
            ),
        }
    )
    # Sampling effort: records and species of *all* species in the cells a species occupies, averaged over its
    # sites. Few records where many are collected point to rarity; few records where few are collected do not.
    for size in ("1deg", "10deg"):
        cell = sites.groupby(f"c{size[:-3]}")
        key = sites[f"c{size[:-3]}"]
        sites[f"effort_records_{size}"] = key.map(cell["n"].sum())
        sites[f"effort_species_{size}"] = key.map(cell["species"].nunique())
    g = sites.groupby("species", sort=True)
    extra = pd.DataFrame(
        {
            "abs_centroid_lat": out["centroid_lat"].abs(),
            "tropical_share": g["tropical"].mean(),
            "lon_span": pd.Series({s: _lon_span_deg(lon[idx]) for s, idx in g.indices.items()}, dtype=float),
            "n_cells_1deg": g["c1"].nunique().astype("int64"),
            "n_cells_10deg": g["c10"].nunique().astype("int64"),
            "mean_dist_km": g["dist"].mean(),
            "max_dist_km": g["dist"].max(),
            "records_per_site": out["n_records"] / out["n_sites"],
            "eoo_aoo_ratio": out["eoo_km2"] / out["aoo_km2"],
            **{c: g[c].mean() for c in sites.columns if c.startswith("effort_")},
        }
    ).reindex(out.index)
    # its share of every record in its distinct 10-degree cells (a cell counted once however many sites it holds)
    records_in_cells = sites.drop_duplicates(["species", "c10"]).groupby("species")["effort_records_10deg"].sum()
    extra["effort_share_10deg"] = out["n_records"] / records_in_cells.reindex(out.index)
    return out.join(extra)


def occurrence_features(occurrences: pd.DataFrame, cube: xr.DataArray,
                        records: pd.DataFrame | None = None) -> pd.DataFrame:
    """Occurrence-based features per species.

    Parameters
    ----------
    occurrences
        One row per species x grid cell: ``species``, ``longitude``, ``latitude`` (WGS84 degrees), ``row``, ``col``
        (grid indices into ``cube``), ``n_records`` (raw records merged into the cell).
    cube
        Current climate, dims (``variable``, ``y``, ``x``), NaN = nodata.
    records
        Every cleaned record (``species``, ``longitude``, ``latitude``; the ingest's ``records.parquet``), for the
        IUCN range metrics. None: the first record of each occupied cell stands in (AOO is then at most 4 km2 per
        grid cell, an underestimate on grids coarser than 2 km).

    Returns
    -------
    DataFrame indexed by ``species`` (sorted) with

    * ``n_records``: sum of raw records; ``n_sites``: occupied grid cells (rows);
    * ``aoo_km2``, ``eoo_km2``, ``n_locations_10km``, ``criterion_b_rank``: IUCN's area of occupancy (2 x 2 km
      equal-area cells x 4 km2), extent of occurrence (geodesic minimum convex polygon, at least AOO), ConR's
      number of locations (10 x 10 km cells) and the preliminary criterion B category (0 LC or NT, 1 VU, 2 EN,
      3 CR), from every record of ``records`` (:func:`sdm.criteria.range_metrics`);
    * ``lat_min``, ``lat_max``, ``lat_span``: degrees; ``centroid_lon`` (circular mean), ``centroid_lat`` (mean)
      of the sites, degrees; ``abs_centroid_lat``: its absolute value, degrees;
    * ``tropical_share``: share of the sites between the tropics (abs(latitude) <= 23.44 degrees), 0..1;
    * ``lon_span``: shortest arc of longitude covering the sites (across the antimeridian if shorter), degrees;
    * ``n_cells_1deg``, ``n_cells_10deg``: distinct 1 x 1 and 10 x 10 degree cells holding a site;
    * ``mean_dist_km``, ``max_dist_km``: great-circle distance from the sites to the centroid, km;
    * ``records_per_site``: ``n_records / n_sites``; ``eoo_aoo_ratio``: ``eoo_km2 / aoo_km2``;
    * sampling effort around the species, from all species of ``occurrences``: ``effort_records_{1,10}deg`` and
      ``effort_species_{1,10}deg``, the records and the number of species of all species in the 1 or 10 degree
      cell of each site, averaged over the species' sites; ``effort_share_10deg``: ``n_records`` over the
      records of all species in the species' distinct 10 degree cells, its share of them (0..1). These depend on
      which other species are in the table;
    * for each cube variable ``v``: ``niche_mean_{v}``, ``niche_sd_{v}``, the mean and population standard
      deviation (ddof = 0, so one site gives 0) of ``v`` at the occurrence cells, nodata cells skipped; units of
      ``v``.
    """
    _require_columns(occurrences, OCCURRENCE_COLUMNS, "occurrences")
    for dim in ("variable", "y", "x"):
        if dim not in cube.dims:
            raise ValueError(f"cube lacks dimension {dim!r}; has {cube.dims}")
    variables = [str(v) for v in cube["variable"].to_numpy()] if "variable" in cube.coords else [
        str(i) for i in range(cube.sizes["variable"])
    ]

    occ = occurrences.reset_index(drop=True)
    species = occ["species"].astype(str)
    rows = occ["row"].to_numpy(dtype=np.int64)
    cols = occ["col"].to_numpy(dtype=np.int64)
    ny, nx = cube.sizes["y"], cube.sizes["x"]
    outside = (rows < 0) | (rows >= ny) | (cols < 0) | (cols >= nx)
    if outside.any():
        first = occ.loc[outside].iloc[0]
        raise ValueError(
            f"{int(outside.sum())} occurrence(s) have row/col outside the cube ({ny} x {nx}), "
            f"e.g. species {first['species']!r} at row {first['row']}, col {first['col']}"
        )

    grouped = occ.assign(species=species).groupby("species", sort=True)
    out = pd.DataFrame(
        {
            "n_records": grouped["n_records"].sum().astype("int64"),
            "n_sites": grouped.size().astype("int64"),
            "lat_min": grouped["latitude"].min().astype(float),
            "lat_max": grouped["latitude"].max().astype(float),
        }
    )
    out["lat_span"] = out["lat_max"] - out["lat_min"]
    out["centroid_lon"] = _circular_mean_deg(occ["longitude"], species)
    out["centroid_lat"] = grouped["latitude"].mean().astype(float)

    # IUCN range metrics from every record (the per-cell rows stand in without them)
    if records is None:
        records = occ.assign(species=species)[["species", "longitude", "latitude"]]
    metrics = range_metrics(records).reindex(out.index)
    for column in ("eoo_km2", "aoo_km2", "n_locations_10km", "criterion_b_rank"):
        out[column] = metrics[column].astype("float64")

    # Climate niche: vectorised point sampling at (row, col), then per-species moments.
    sampled = cube.isel(y=xr.DataArray(rows, dims="site"), x=xr.DataArray(cols, dims="site"))
    values = np.asarray(sampled.transpose("site", "variable").to_numpy(), dtype=float)
    niche = pd.DataFrame(values, columns=variables).groupby(species.to_numpy(), sort=True)
    means = niche.mean().reindex(out.index)
    sds = niche.std(ddof=0).reindex(out.index)
    for v in variables:
        out[f"niche_mean_{v}"] = means[v].to_numpy()
        out[f"niche_sd_{v}"] = sds[v].to_numpy()

    out = _spread_and_effort(occ, species, out)
    out.index.name = "species"
    return out[list(OCCURRENCE_FEATURES) + [c for c in out.columns if c.startswith(NICHE_PREFIXES)]]


def match_coords(obj, like, what: str):
    """``obj`` on the coordinates of ``like``: the same labels, or cell centres equal within 1/1000 of a cell
    (float noise such as a float32 round trip). Anything else raises instead of a silent NaN-filled realignment."""
    for dim in ("species", "y", "x"):
        if dim not in obj.dims or dim not in like.dims:
            continue
        a, b = obj[dim].to_numpy(), like[dim].to_numpy()
        same = a.shape == b.shape and np.array_equal(a, b)
        if not same and dim != "species" and a.shape == b.shape and a.size:
            step = float(np.abs(np.diff(b.astype(float))).min()) if b.size > 1 else 1.0
            same = bool(np.allclose(a.astype(float), b.astype(float), rtol=0.0, atol=1e-3 * step))
        if not same:
            raise ValueError(
                f"{what} do not match the current predictions along {dim!r} "
                f"({a.size} vs {b.size} labels, starting {a[:3].tolist()} vs {b[:3].tolist()})"
            )
        obj = obj.assign_coords({dim: like[dim]})
    return obj


def range_features(
    current: xr.Dataset,
    future: xr.Dataset | None,
    dispersal: str,
    cell_area_km2: xr.DataArray,
    protected: xr.DataArray | None = None,
) -> pd.DataFrame:
    """Predicted-range features per species for one scenario and dispersal assumption.

    Parameters
    ----------
    current, future
        Predictions with ``suitability`` (float, [0, 1], NaN = nodata) and ``presence`` (bool), dims (``species``,
        ``y``, ``x``), possibly dask-backed. ``future=None`` means the scenario *is* the current one.
    dispersal
        ``"full"``: the range is the future presence; ``"none"``: future presence AND current presence.
        Ignored (but validated) when ``future`` is None.
    cell_area_km2
        Area of each cell (``y``, ``x``), km2; NaN counts as 0.
    protected
        Protected fraction of each cell (``y``, ``x``, 0..1), or None: then ``protected_share_range`` is left out.

    Returns
    -------
    DataFrame indexed by ``species`` (the predictions' order) with

    * ``range_km2``: area of the range under the scenario, km2;
    * ``mean_suitability``: mean suitability over the range's cells (unweighted), 0 if the range is empty;
    * ``range_change``: ``range_km2 / current_range_km2`` (1 for the current scenario; 0 / 0 gives 0, x / 0 with
      x > 0 gives inf: a range gained from nothing);
    * ``range_loss``: fraction of the current range lost under the scenario, ``clip(1 - range_km2 /
      current_range_km2, 0, 1)``; with no dispersal this is ``1 - overlap / current``; 0 when the current range is
      empty. Input of criterion A3;
    * ``current_range_km2``: area of the current range, km2;
    * ``protected_share_range`` (with ``protected``): protected share of the range's area, 0..1 (NaN when empty).
    """
    return scenario_ranges(current, future, [dispersal], cell_area_km2, protected)[dispersal]


SPARSE_ENTRIES = 1 << 24
"""Species x cells entries of a presence mask scanned at once by :func:`_mask_sums` (bounds its index arrays)."""


def _mask_sums(mask: np.ndarray, suit: np.ndarray, valid: np.ndarray, weight: np.ndarray,
               protected: np.ndarray | None, coded: bool) -> list[np.ndarray]:
    """Per-species (area, suitability sum, cell count[, protected area]) of one presence mask (species, cells),
    over its present entries in ``valid`` cells only.

    Presence is a few per cent of the entries: one scan finds them (a group of species at a time) and every sum
    is a ``bincount`` over them, where dense products over all species x cells cost several times the model
    forward. ``suit``: suitability (float, NaN no data) or, with ``coded``, its uint8 codes, decoded only at the
    present entries."""
    from sdm.codes import PROBABILITY

    n_species, n_cells = mask.shape
    sums = np.zeros((3 if protected is None else 4, n_species))
    group = max(1, SPARSE_ENTRIES // max(n_cells, 1))
    for first in range(0, n_species, group):
        part = mask[first:first + group]
        rows, cols = np.divmod(np.flatnonzero(part), n_cells)
        kept = valid[cols]
        rows, cols = rows[kept], cols[kept]
        values = suit[first:first + group][rows, cols]
        values = PROBABILITY[values].astype("float64") if coded else np.nan_to_num(values.astype("float64"))
        n = len(part)
        sums[0, first:first + n] = np.bincount(rows, weights=weight[cols], minlength=n)
        sums[1, first:first + n] = np.bincount(rows, weights=values, minlength=n)
        sums[2, first:first + n] = np.bincount(rows, minlength=n)
        if protected is not None:
            sums[3, first:first + n] = np.bincount(rows, weights=protected[cols], minlength=n)
    return list(sums)


def _block_sums(pres0, suit0, area, *rest, n_futures, dispersals, has_share, coded):
    """Per-species sums of one block of cells: (species, statistic, 1, 1) in the order of
    :func:`all_scenario_ranges`: the present's range (area, suitability sum, cell count[, protected area]), then
    the same for every future scenario (``rest``: presence and suitability of each, then the protected share when
    ``has_share``) and dispersal assumption. Only the block's cells with data are looked at (those where the first
    species has a suitability); a cell with data in the present but none in a scenario keeps the present's
    presence and suitability in that scenario (no change, rather than a lost cell); with ``coded`` the suitability arrays are the stored uint8 codes, decoded only where
    a species is present (:func:`_mask_sums`)."""
    rest = list(rest)
    futures = [(rest[2 * i], rest[2 * i + 1]) for i in range(n_futures)]
    share = rest[2 * n_futures] if has_share else None
    n_species = pres0.shape[0]

    def flat(a):  # (species, cells), a view of the block
        return np.asarray(a).reshape(a.shape[0], -1)

    first = flat(suit0)[0]
    valid = first != 255 if coded else np.isfinite(first)
    n_stats = 4 if has_share else 3
    out = np.zeros((n_species, n_stats * (1 + n_futures * len(dispersals)), 1, 1))
    if not valid.any():
        return out
    weight = np.nan_to_num(np.asarray(area, dtype="float64").ravel())
    protected = None if share is None else weight * np.nan_to_num(np.asarray(share, dtype="float64").ravel())
    cells = flat(pres0).astype(bool, copy=False)
    columns = _mask_sums(cells, flat(suit0), valid, weight, protected, coded)
    for pres1, suit1 in futures:
        future, future_suit = flat(pres1).astype(bool, copy=False), flat(suit1)
        # a cell with present data but none in this scenario (climate models' land masks differ) says nothing of
        # change: the species keeps its present state there, rather than losing the cell
        unknown = valid & ~(future_suit[0] != 255 if coded else np.isfinite(future_suit[0]))
        if unknown.any():
            future = np.where(unknown, cells, future)
            future_suit = np.where(unknown, flat(suit0), future_suit)
        for dispersal in dispersals:
            pres = future if dispersal == "full" else future & cells
            columns += _mask_sums(pres, future_suit, valid, weight, protected, coded)
    out[:, :, 0, 0] = np.stack(columns, axis=1)
    return out


BLOCKS_PER_COMPUTE = 4
"""Blocks of cells one Dask computation of the range sums takes at most. Given the whole grid at once, Dask's
threaded scheduler keeps the forwards of many blocks alive beside the ones being reduced: on a quarter of the
global 30 arc-second grid (1,100 blocks) the job reached 6 GB, where one block alone needs 0.6 GB. Since the pass
also writes the presence stores, each forward has two consumers (the sums and the packing), and Dask runs the
forwards of a whole computation before their consumers (about 0.35 GB per block on the 1/16 global band:
both climates' codes and presence). Measured on that band (151 species, 2 climates, 2026-12-03, ``getrusage``):
8 blocks per computation 106-109 s and 3.45-3.56 GB, 4 blocks 100 s and 2.03 GB; without the MESS layer 8 / 4 / 2
blocks took 92 / 79 / 91 s and 3.66 / 2.43 / 1.69 GB."""


def sum_in_batches(blocks: "da.Array", per_compute: int | None = None, label: str | None = None,
                   stored: list | None = None) -> np.ndarray:
    """Sum of ``blocks`` (..., block rows, block columns: one entry per block, from :func:`dask.array.map_blocks`)
    over its last two axes, computed :data:`BLOCKS_PER_COMPUTE` blocks at a time (row-major), so that memory is
    bounded by the batch, not by the grid; one progress bar named ``label`` (none without) for the whole sum.

    ``stored``: (Dask array, Zarr array) pairs on the same grid of blocks (their last two axes): each block is
    computed in the same Dask computation as its sums (so the tasks they share, a fused model forward, run once)
    and written to the Zarr array."""
    per_compute = per_compute or BLOCKS_PER_COMPUTE
    stored = stored or []
    rows, cols = blocks.shape[-2:]
    total = np.zeros(blocks.shape[:-2])
    with batches_shown(label or "", enabled=label is not None) as done:
        for first in range(0, rows * cols, per_compute):
            cells = [divmod(i, cols) for i in range(first, min(first + per_compute, rows * cols))]
            writes = [(array, target, r, c) for array, target in stored for r, c in cells]
            results = da.compute(*[blocks[..., r, c] for r, c in cells],
                                 *[array.blocks[(0,) * (array.ndim - 2) + (r, c)] for array, _, r, c in writes])
            total += np.sum(results[:len(cells)], axis=0)
            for (array, target, r, c), block in zip(writes, results[len(cells):]):
                y0, x0 = sum(array.chunks[-2][:r]), sum(array.chunks[-1][:c])
                target[..., y0:y0 + block.shape[-2], x0:x0 + block.shape[-1]] = block
            done((first + len(cells)) / (rows * cols))
    return total


def scenario_ranges(
    current: xr.Dataset,
    future: xr.Dataset | None,
    dispersals: list[str],
    cell_area_km2: xr.DataArray,
    protected: xr.DataArray | None = None,
) -> dict[str, pd.DataFrame]:
    """:func:`range_features` of one scenario (``future`` None: the present) for every dispersal assumption in
    ``dispersals``, from one pass over the predictions (:func:`all_scenario_ranges`). Returns dispersal -> table."""
    if future is None:
        return all_scenario_ranges(current, {}, dispersals, cell_area_km2, protected)["current"]
    return all_scenario_ranges(current, {"future": future}, dispersals, cell_area_km2, protected)["future"]


def all_scenario_ranges(
    current: xr.Dataset,
    futures: dict[str, xr.Dataset],
    dispersals: list[str],
    cell_area_km2: xr.DataArray,
    protected: xr.DataArray | None = None,
    presence_stores: dict | None = None,
) -> dict[str, dict[str, pd.DataFrame]]:
    """:func:`range_features` of the present and of every future scenario (``futures``: name -> predictions) for
    every dispersal assumption in ``dispersals``, from one pass over the predictions: one Dask task per block of
    cells reduces the present's block and every scenario's to all the sums at once, so each block (in fused mode,
    each model forward) is made once for every run, the present's included.

    ``presence_stores``: scenario (``"current"`` for the present) -> path of a presence store to write in the same
    pass (:func:`sdm.packed.presence_store`: presence as bits, the cells with data and the MESS layer), for the
    indicator pass to read instead of making the predictions again; each appears only once complete.

    Returns scenario -> dispersal -> table; the present is ``"current"`` (the same table for every dispersal)."""
    for dispersal in dispersals:
        _check_dispersal(dispersal)
    for name, ds in (("current", current), *futures.items()):
        for var in ("suitability", "presence"):
            if var not in ds:
                raise ValueError(f"{name} predictions lack variable {var!r}; have {list(ds.data_vars)}")
    futures = {name: match_coords(ds, current, f"{name} predictions") for name, ds in futures.items()}
    pres0 = current["presence"]
    area = match_coords(cell_area_km2, pres0, "cell_area_km2")
    share = None if protected is None else match_coords(protected, pres0, "protected areas")
    # One task per block of cells reduces that block's predictions to per-species sums at once, so each block of
    # the predictions (a model forward in fused mode) is consumed where it is made: memory ~ threads x block.
    chunks = pres0.chunks if pres0.chunks is not None else tuple((n,) for n in pres0.shape)
    spatial = chunks[1:]
    species_chunks = ((pres0.sizes["species"],), *spatial)
    # the stored uint8 codes when the predictions carry them: decoded only at each species' present cells
    coded = "suitability_code" in current and all("suitability_code" in ds for ds in futures.values())
    suitability = "suitability_code" if coded else "suitability"
    arrays = [dask_blocks(pres0, species_chunks), dask_blocks(current[suitability], species_chunks),
              dask_blocks(area, spatial)]
    for ds in futures.values():
        arrays += [dask_blocks(ds["presence"], species_chunks), dask_blocks(ds[suitability], species_chunks)]
    if share is not None:
        arrays.append(dask_blocks(share, spatial))
    n_stats = 4 if share is not None else 3
    n_species = pres0.sizes["species"]
    blocks = da.map_blocks(_block_sums, *arrays, n_futures=len(futures), dispersals=tuple(dispersals),
                           has_share=share is not None, coded=coded,
                           chunks=((n_species,), (n_stats * (1 + len(futures) * len(dispersals)),),
                                   (1,) * len(spatial[0]), (1,) * len(spatial[1])),
                           new_axis=1, dtype="float64", meta=np.empty((0, 0, 0, 0), "float64"))
    runs = ", ".join(["current"] + [f"{name} {d}" for name in futures for d in dispersals])
    with ExitStack() as stack:
        stored = []
        if presence_stores:
            from sdm.packed import presence_store

            def cells_with_data(predictions):  # each scenario's own: its land mask may lack some present cells
                first = predictions[suitability].isel(species=0)
                return first != NODATA if coded else first.notnull()

            predictions = {"current": current} | futures
            stored = store_targets({name: presence_store(predictions[name], cells_with_data(predictions[name]),
                                                         spatial)
                                    for name in presence_stores if name in predictions}, presence_stores, stack,
                                   list(predictions))
        totals = sum_in_batches(blocks, label=f"range sums ({runs})", stored=stored)
    species = pd.Index([str(s) for s in current["species"].to_numpy()], name="species")
    return run_tables(species, totals, list(futures), dispersals, n_stats)


def run_tables(species: pd.Index, totals: np.ndarray, futures: list, dispersals, n_stats: int) -> dict:
    """scenario -> dispersal -> :func:`range_features` table of the per-species sums ``totals`` (species, the
    statistics of the present, then of every future scenario and dispersal assumption, ``n_stats`` each, in the
    order of :func:`all_scenario_ranges`)."""
    present = totals[:, :n_stats]
    tables = {"current": dict.fromkeys(dispersals, _range_table(species, present, present[:, 0]))}
    column = n_stats
    for name in futures:
        tables[name] = {}
        for dispersal in dispersals:
            tables[name][dispersal] = _range_table(species, totals[:, column:column + n_stats], present[:, 0])
            column += n_stats
    return tables


def store_targets(stores: dict, paths: dict, stack, scenarios: list) -> list:
    """(Dask array, Zarr array) pairs of every layer of the presence stores ``stores`` (scenario -> lazy dataset of
    :func:`sdm.packed.presence_store`) for :func:`sum_in_batches` to write, into partial stores that replace
    ``paths`` (scenario -> path) when ``stack`` closes without an error (:func:`sdm.storage.replacing`); a path
    whose scenario is not among the pass's ``scenarios`` is a one-line error naming it."""
    import zarr

    missing = sorted(set(paths) - set(scenarios))
    if missing:
        raise ValueError(f"presence store {paths[missing[0]]}: no predictions of scenario {missing[0]!r} in this "
                         f"pass (have {sorted(scenarios)})")

    from sdm.packed import presence_codecs
    from sdm.storage import replacing, zarr_ready

    pairs = []
    for name, store in stores.items():
        store = zarr_ready(store)
        partial = stack.enter_context(replacing(paths[name]))
        store.to_zarr(partial, mode="w", consolidated=False, compute=False, encoding=presence_codecs())
        group = zarr.open_group(partial, mode="r+")
        # every chunk written as it is: comparing each with the fill value first costs a pass over it
        pairs += [(store[v].data, group[v].with_config({"write_empty_chunks": True})) for v in store.data_vars]
    return pairs


def _range_table(species: pd.Index, sums: np.ndarray, current_km2: np.ndarray) -> pd.DataFrame:
    """The :func:`range_features` table of one run from its per-species sums (species, statistic: range area,
    suitability sum, cell count[, protected area]) and the present's range area."""
    area, suitability, cells = sums[:, 0], sums[:, 1], sums[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(cells > 0, suitability / np.where(cells > 0, cells, 1), 0.0)
        ratio = np.where(current_km2 > 0, area / current_km2, np.where(area > 0, np.inf, 0.0))
    out = pd.DataFrame({"range_km2": area, "mean_suitability": mean, "current_range_km2": current_km2},
                       index=species)
    out["range_change"] = ratio
    out["range_loss"] = np.where(current_km2 > 0, np.clip(1.0 - ratio, 0.0, 1.0), 0.0)
    columns = list(RANGE_FEATURES)
    if sums.shape[1] > 3:
        with np.errstate(divide="ignore", invalid="ignore"):
            out["protected_share_range"] = np.where(area > 0, sums[:, 3] / np.where(area > 0, area, 1), np.nan)
        columns.append("protected_share_range")
    return out[columns]


def species_features(
    occurrences: pd.DataFrame,
    cube: xr.DataArray,
    current: xr.Dataset,
    future: xr.Dataset | None,
    dispersal: str,
    cell_area_km2: xr.DataArray,
    records: pd.DataFrame | None = None,
    threats: dict[str, xr.DataArray] | None = None,
    ranges: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """All classifier features per species for one scenario and dispersal (see the two functions above for units;
    ``ranges``: the range features already computed, e.g. by :func:`scenario_ranges` for both dispersal
    assumptions in one pass; ``current`` / ``future`` are then not read;
    ``records``: every cleaned record, for the IUCN range metrics, see :func:`occurrence_features`; ``threats``:
    layers of :func:`sdm.threats.threat_layers`, for :data:`THREAT_FEATURES` and the pressures at the records).

    One row per species of the predictions (in their order), then species that have occurrences but no prediction
    (sorted), whose range features are NaN. Species predicted but without occurrences get 0 for the counts and
    areas of :data:`COUNT_FEATURES` and NaN for the other occurrence features. The caller adds
    ``scenario`` / ``dispersal`` columns if it wants them.
    """
    _check_dispersal(dispersal)
    from sdm.threats import PROTECTED, record_means

    threats = threats or {}
    occ = occurrence_features(occurrences, cube, records)
    if threats:
        occ = occ.join(record_means(occurrences, threats))
    rng = ranges if ranges is not None else range_features(current, future, dispersal, cell_area_km2,
                                                           threats.get(PROTECTED))
    extra = [s for s in occ.index if s not in set(rng.index)]
    index = pd.Index(list(rng.index) + extra, name="species")
    out = occ.reindex(index).join(rng, how="left")
    no_occ = ~index.isin(occ.index)
    for c in COUNT_FEATURES:
        out.loc[no_occ, c] = 0
    for c in ("n_records", "n_sites", "n_locations_10km", "n_cells_1deg", "n_cells_10deg"):
        out[c] = out[c].astype("int64")
    return out
