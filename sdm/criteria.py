"""IUCN range metrics from the cleaned records, and a preliminary category under criterion B.

As the IUCN Guidelines for Using the Red List Categories and Criteria (version 16, 2024, sections 4.9-4.11) define
them, and as ConR computes them (Dauby et al. 2017, Ecology and Evolution 7:11292):

- **AOO** (area of occupancy): the number of occupied cells of a 2 x 2 km equal-area grid (EASE-Grid 2.0,
  EPSG:6933) times 4 km2, from every record (not one per cell of the run's grid);
- **EOO** (extent of occurrence): the area of the minimum convex polygon of the records, on the WGS84 ellipsoid
  (``pyproj.Geod.polygon_area_perimeter`` over the hull's vertices); the hull is taken in a gnomonic projection
  centred on the records, where great circles are straight, so its vertices are the spherical hull's and a range
  across the antimeridian is as small as it is (ranges wider than a hemisphere: an equal-area approximation). Fewer
  than three distinct points, or points on a line, give 0; the Guidelines then set EOO to AOO, as
  :func:`range_metrics` does whenever EOO < AOO;
- **locations**: ConR's approximation, the occupied cells of a 10 x 10 km equal-area grid (a "location" proper
  depends on the threat, which records do not tell);
- **criterion B, preliminary** (:func:`criterion_b`): the most threatened category whose EOO (B1) or AOO (B2)
  threshold is met together with its limit on locations (condition a), as ConR does. ConR, like this, assumes
  condition (b), a continuing decline, is met: the result is a preliminary category, not an assessment.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from pyproj import Geod, Transformer

EQUAL_AREA_CRS = "EPSG:6933"
"""Equal-area CRS (WGS 84 / NSIDC EASE-Grid 2.0 Global) of the AOO and location grids."""
AOO_CELL_M = 2000.0
"""Side of the AOO grid cell, metres (IUCN: 2 x 2 km)."""
LOCATION_CELL_M = 10000.0
"""Side of the cells that stand for locations, metres (ConR's default ``Cell_size_locations`` of 10 km)."""

CRITERION_B = (
    # (category, EOO below km2 (B1), AOO below km2 (B2), at most this many locations (condition a))
    ("CR", 100.0, 10.0, 1),
    ("EN", 5000.0, 500.0, 5),
    ("VU", 20000.0, 2000.0, 10),
)
"""IUCN criterion B thresholds, most threatened first."""
NOT_THREATENED_B = "LC or NT"
"""The preliminary category when no threshold of criterion B is met (ConR's wording)."""
CRITERION_B_RANK = {NOT_THREATENED_B: 0, "VU": 1, "EN": 2, "CR": 3}
"""Ordinal code of the preliminary category (the classifier's ``criterion_b_rank`` feature)."""

_GEOD = Geod(ellps="WGS84")


def _wrapped(lon) -> np.ndarray:
    """Longitudes (degrees) in [-180, 180): 180 and -180 are one meridian, and one AOO cell."""
    lon = np.asarray(lon, dtype="float64")
    return (lon + 180.0) % 360.0 - 180.0


def _equal_area_xy(lon, lat) -> np.ndarray:
    transformer = Transformer.from_crs("EPSG:4326", EQUAL_AREA_CRS, always_xy=True)
    x, y = transformer.transform(np.asarray(lon, dtype="float64"), np.asarray(lat, dtype="float64"))
    return np.c_[x, y]


def occupied_cells(lon, lat, species, cell_m: float) -> pd.Series:
    """Distinct ``cell_m`` x ``cell_m`` m cells of the EASE-Grid 2.0 (EPSG:6933) holding a record, per species
    (index: species, sorted)."""
    species = np.asarray(species).astype(str)
    xy = _equal_area_xy(_wrapped(lon), lat)
    cells = pd.DataFrame({"species": species, "i": np.floor(xy[:, 0] / cell_m), "j": np.floor(xy[:, 1] / cell_m)})
    # a record without finite coordinates occupies no cell; its species keeps a row (0 cells) if it has no other
    counted = cells[np.isfinite(xy).all(axis=1)].drop_duplicates().groupby("species").size()
    return counted.reindex(pd.Index(np.unique(species), name="species"), fill_value=0).astype("int64")


def aoo_km2(lon, lat, species) -> pd.Series:
    """IUCN area of occupancy (km2) per species: occupied 2 x 2 km equal-area cells x 4 km2."""
    return (occupied_cells(lon, lat, species, AOO_CELL_M) * (AOO_CELL_M / 1000.0) ** 2).astype("float64")


def n_locations(lon, lat, species) -> pd.Series:
    """Number of locations per species as ConR approximates it: occupied 10 x 10 km equal-area cells."""
    return occupied_cells(lon, lat, species, LOCATION_CELL_M)


def _centre(lon: np.ndarray, lat: np.ndarray) -> tuple[float, float]:
    """Longitude and latitude of the normalised mean of the points' unit vectors (degrees)."""
    from sdm.accessible import unit_vectors

    v = unit_vectors(lon, lat).mean(axis=0)
    if np.linalg.norm(v) < 1e-9:  # points spread evenly round the globe: any centre
        return 0.0, 0.0
    return float(np.degrees(np.arctan2(v[1], v[0]))), float(np.degrees(np.arctan2(v[2], np.hypot(v[0], v[1]))))


_GNOMONIC_MIN_COS = 0.01
"""Points farther than about 89.4 degrees from the centre have no gnomonic image (the projection covers less than
a hemisphere): their hull is taken in the azimuthal equal-area projection instead."""


def _azimuthal(lon: np.ndarray, lat: np.ndarray, lon0: float, lat0: float) -> np.ndarray:
    """(n, 2) azimuthal coordinates (unit sphere) of points (degrees) about (lon0, lat0), for their convex hull.

    Gnomonic where every point lies within :data:`_GNOMONIC_MIN_COS` of a hemisphere about the centre: great
    circles are straight lines there, so the plane hull's vertices are exactly those of the spherical hull (an
    equal-area projection bends great circles, and wide ranges then lose vertices: 10 % of the area at +-60
    degrees). Otherwise Lambert azimuthal equal-area, an approximation for ranges wider than a hemisphere, whose
    EOO is far above every threshold of criterion B anyway. The sphere's formulas serve, without a pyproj
    transformer per species (26 ms each: most of the features job on 1,000 species)."""
    lam, phi = np.radians(lon) - np.radians(lon0), np.radians(lat)
    phi0 = np.radians(lat0)
    cos_c = np.sin(phi0) * np.sin(phi) + np.cos(phi0) * np.cos(phi) * np.cos(lam)
    if cos_c.min() > _GNOMONIC_MIN_COS:
        k = 1.0 / cos_c
    else:
        k = np.sqrt(2.0 / np.maximum(1.0 + cos_c, 1e-12))
    return np.c_[k * np.cos(phi) * np.sin(lam), k * (np.cos(phi0) * np.sin(phi) - np.sin(phi0) * np.cos(phi) * np.cos(lam))]


def hull_area_km2(lon, lat) -> float:
    """Area (km2, WGS84 ellipsoid, geodesic edges) of the convex hull of one species' points (degrees); 0 when the
    hull is not a polygon (fewer than three distinct points, or collinear). The hull's vertices are found in a
    gnomonic projection centred on the points (exact, and correct across the antimeridian; :func:`_azimuthal`), and
    the polygon they make is measured on the ellipsoid. Points without finite coordinates are left out."""
    from scipy.spatial import ConvexHull, QhullError

    points = np.c_[_wrapped(lon), np.asarray(lat, dtype="float64")]
    points = np.unique(points[np.isfinite(points).all(axis=1)], axis=0)
    if len(points) < 3:
        return 0.0
    projected = _azimuthal(points[:, 0], points[:, 1], *_centre(points[:, 0], points[:, 1]))
    try:
        hull = ConvexHull(projected)
    except QhullError:  # collinear points (or all in one place): no polygon
        return 0.0
    if hull.volume <= 0:  # in 2-D, "volume" is the area
        return 0.0
    vertices = points[hull.vertices]
    area, _ = _GEOD.polygon_area_perimeter(vertices[:, 0], vertices[:, 1])
    return abs(area) / 1e6


def eoo_km2(lon, lat, species) -> pd.Series:
    """Minimum-convex-polygon area (km2) of each species' records (:func:`hull_area_km2`; index: species, sorted)
    before the Guidelines' rule that EOO is at least AOO (:func:`range_metrics` applies it)."""
    frame = pd.DataFrame({"species": np.asarray(species).astype(str), "lon": np.asarray(lon, dtype="float64"),
                          "lat": np.asarray(lat, dtype="float64")})
    if frame.empty:
        return pd.Series(dtype="float64", index=pd.Index([], name="species", dtype=object))
    return frame.groupby("species").apply(lambda g: hull_area_km2(g["lon"].to_numpy(), g["lat"].to_numpy()),
                                          include_groups=False).astype("float64")


def criterion_b(eoo: pd.Series, aoo: pd.Series, locations: pd.Series) -> pd.Series:
    """Preliminary criterion B category per species (``CR``, ``EN``, ``VU`` or ``LC or NT``): the most threatened
    category of :data:`CRITERION_B` whose EOO (B1) or AOO (B2) threshold is met with at most its number of
    locations. NaN inputs give NaN."""
    out = pd.Series(NOT_THREATENED_B, index=eoo.index, dtype=object, name="category_b")
    for category, eoo_below, aoo_below, max_locations in reversed(CRITERION_B):  # the most threatened wins
        met = ((eoo < eoo_below) | (aoo < aoo_below)) & (locations <= max_locations)
        out[met.to_numpy()] = category
    out[(eoo.isna() | aoo.isna() | locations.isna()).to_numpy()] = np.nan
    return out


def range_metrics(records: pd.DataFrame) -> pd.DataFrame:
    """IUCN range metrics per species from every cleaned record (``species``, ``longitude``, ``latitude``):
    ``aoo_km2``, ``eoo_km2`` (raised to AOO when smaller), ``n_locations_10km``, ``criterion_b_rank`` (0 LC or
    NT, 1 VU, 2 EN, 3 CR) and ``category_b``; index: species with at least one record with finite coordinates,
    sorted."""
    missing = [c for c in ("species", "longitude", "latitude") if c not in records.columns]
    if missing:
        raise ValueError(f"records lack column(s) {missing}; have {list(records.columns)}")
    # a record without finite coordinates tells nothing of the range: left out (the ingest drops them already), so a
    # species with no other record has no row here rather than an AOO of 0, which would read as CR
    located = records[np.isfinite(records["longitude"].to_numpy(dtype="float64"))
                      & np.isfinite(records["latitude"].to_numpy(dtype="float64"))]
    lon, lat, species = located["longitude"], located["latitude"], located["species"]
    out = pd.DataFrame({"aoo_km2": aoo_km2(lon, lat, species)})
    out["eoo_km2"] = np.maximum(eoo_km2(lon, lat, species).reindex(out.index), out["aoo_km2"])
    out["n_locations_10km"] = n_locations(lon, lat, species).reindex(out.index)
    out["category_b"] = criterion_b(out["eoo_km2"], out["aoo_km2"], out["n_locations_10km"])
    out["criterion_b_rank"] = out["category_b"].map(CRITERION_B_RANK).astype("float64")
    out.index.name = "species"
    return out[["aoo_km2", "eoo_km2", "n_locations_10km", "criterion_b_rank", "category_b"]]
