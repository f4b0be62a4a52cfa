"""A seeded virtual world whose truth is known: climate rasters, occurrences and Red List labels.

``generate_demo`` writes ordinary input files (GeoTIFFs, a GBIF-like CSV, a Red List CSV) that the pipeline's
ingest reads as if they were real data, next to a ``truth/`` folder that holds what the pipeline should recover:
each species' niche, its true current and future presence, and its IUCN category under criterion B.

The world is a grid of 1 km cells in EPSG:3035 (LAEA Europe) placed over the central Alps. Elevation is
synthetic (a main ridge, scattered massifs and fractal noise, 200-3500 m); climate follows it: temperature falls
with elevation (6.5 degC/km) and northwards, rainfall falls west to east and rises on windward slopes. A lake is
NaN in every band. Species have Gaussian responses on 2-3 climate variables; true presence is suitability >= 0.5
on land. Niche widths are fitted per species to a target range size so that the real criterion B thresholds give
every category, LC to CR, in a default 200 x 200 km world.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
import rioxarray  # noqa: F401  (registers the .rio accessor)
import shapely
import xarray as xr
from pyproj import Transformer
from affine import Affine

from sdm.redlist import CATEGORIES, LONG_NAMES
from sdm.storage import write_zarr

CRS = "EPSG:3035"
CELL_M = 1000.0
ORIGIN = (4_200_000.0, 2_700_000.0)
"""Upper-left corner (x, y) in EPSG:3035 metres: the default 200 km square spans about 8.4-11.0 E, 45.6-47.4 N."""

VARIABLES: tuple[str, ...] = ("bio1", "bio4", "bio6", "bio12", "bio15")
UNITS: dict[str, str] = {
    "bio1": "degC",  # annual mean temperature
    "bio4": "degC*100",  # temperature seasonality: SD of monthly means x 100
    "bio6": "degC",  # min temperature of the coldest month
    "bio12": "mm",  # annual precipitation
    "bio15": "percent",  # precipitation seasonality: CV of monthly totals
}

DEFAULT_SCENARIOS: dict[str, dict] = {
    "ssp126_2070": {"warming": 1.5, "precip_change": -0.05},
    "ssp585_2070": {"warming": 4.0, "precip_change": -0.2},
}

PRESENCE_THRESHOLD = 0.5
"""True presence is suitability >= this, for every species."""

REDLIST_NAMES: dict[str, str] = {
    code: name.title() for name, code in LONG_NAMES.items() if code in CATEGORIES and "/" not in name
}
"""Code -> IUCN long name as a Red List export spells it ("Least Concern"), derived from ``sdm.redlist``."""

# IUCN criterion B thresholds (km2), most threatened first; NT is the band just above VU.
_EOO_LIMITS = (("CR", 100.0), ("EN", 5_000.0), ("VU", 20_000.0), ("NT", 30_000.0))
_AOO_LIMITS = (("CR", 10.0), ("EN", 500.0), ("VU", 2_000.0), ("NT", 3_000.0))

# Share of species aimed at each category, and the true range (km2) that makes it likely. The range decides AOO
# directly; EOO also depends on how scattered the range is, so each design is checked and retried.
_TARGET_SHARE = {"LC": 0.35, "NT": 0.15, "VU": 0.20, "EN": 0.20, "CR": 0.10}
_TARGET_RANGE_KM2 = {"CR": (6, 60), "EN": (60, 900), "VU": (400, 3_000), "NT": (1_500, 6_000), "LC": (6_000, 40_000)}
_DESIGN_TRIES = 40

_WATER_SHARE = 0.05
_GENERA = tuple(
    p + s
    for p in ("Demo", "Virt", "Fict", "Synth", "Pseudo", "Simul", "Mock", "Alpin", "Nival", "Crypt", "Oro", "Glaci")
    for s in ("flora", "aria", "ella", "ops", "anthus", "ium", "odes", "ina")
)
_EPITHETS = (
    "alpina", "montana", "nivalis", "glacialis", "rupestris", "pratensis", "sylvatica", "palustris", "saxatilis",
    "minima", "major", "elegans", "rara", "vulgaris", "borealis", "australis", "occidentalis", "orientalis",
    "lacustris", "humilis", "gracilis", "robusta", "aurea", "alba", "rubra", "caerulea", "virens", "tenuis",
    "insubrica", "rhaetica", "helvetica", "lepontica", "cacuminis", "vallesiaca", "subalpina", "calcarea",
    "silicicola", "riparia", "umbrosa", "aprica",
)


def generate_demo(
    out_dir: str | Path,
    rows: int = 200,
    cols: int = 200,
    n_species: int = 40,
    seed: int = 1,
    scenarios: dict[str, dict] | None = None,
    unassessed_share: float = 0.2,
) -> dict[str, Path]:
    """Write a virtual world with known truth under ``out_dir``.

    Parameters
    ----------
    out_dir : folder to write into (created if missing).
    rows, cols : grid size in 1 km cells.
    n_species : number of virtual species.
    seed : everything written is a deterministic function of the arguments.
    scenarios : future scenario name -> {"warming": degC, "precip_change": fraction of annual rainfall, e.g. -0.2}.
        Defaults to ``DEFAULT_SCENARIOS``.
    unassessed_share : fraction of species left out of ``redlist.csv`` (a couple of them appear as Data Deficient).

    Returns
    -------
    dict of written paths: "occurrences", "redlist", "current", one key per scenario name (its climate GeoTIFF),
    "truth_species", "truth_presence".

    Files
    -----
    climate/{current,<scenario>}.tif : float32, one band per ``VARIABLES`` name (band description), EPSG:3035,
        1 km cells, NaN on water.
    occurrences.csv : species, decimalLongitude, decimalLatitude (WGS84 degrees, written as text), including
        ~1 % broken rows and some verbatim repeats.
    redlist.csv : scientificName, redlistCategory (IUCN long names) for assessed species, plus Data Deficient ones.
    truth/species.csv : species; variables (space-separated); <var>_opt and <var>_tol (Gaussian SD, variable
        units; NaN where unused); true_range_km2, eoo_km2, aoo_km2; true_category (criterion B); assessed;
        n_records (clean, distinct records in occurrences.csv).
    truth/presence.zarr : see ``load_truth``.
    """
    if rows < 10 or cols < 10:
        raise ValueError("the demo world needs at least 10 x 10 cells")
    if not 0.0 <= unassessed_share < 1.0:
        raise ValueError("unassessed_share must be in [0, 1)")
    scenarios = dict(DEFAULT_SCENARIOS if scenarios is None else scenarios)
    if "current" in scenarios:
        raise ValueError("'current' is reserved for the present climate")
    out = Path(out_dir)
    (out / "climate").mkdir(parents=True, exist_ok=True)
    (out / "truth").mkdir(parents=True, exist_ok=True)

    # Independent streams per stage, so changing e.g. the number of species leaves the climate unchanged.
    ss_terrain, ss_climate, ss_species, ss_occ, ss_redlist = np.random.SeedSequence(seed).spawn(5)
    elev, water, towns = _terrain(np.random.default_rng(ss_terrain), rows, cols)
    current = _current_climate(elev, water, np.random.default_rng(ss_climate))
    futures = {
        name: _future_climate(current, elev, water, float(p.get("warming", 0.0)), float(p.get("precip_change", 0.0)),
                              np.random.default_rng([seed, zlib.crc32(name.encode())]))
        for name, p in scenarios.items()
    }

    # The truth is computed from the climate exactly as published (float32), so a perfect model could match it.
    current = _as_written(current)
    futures = {name: _as_written(clim) for name, clim in futures.items()}

    paths: dict[str, Path] = {"current": out / "climate" / "current.tif"}
    _write_climate(paths["current"], current)
    for name, clim in futures.items():
        paths[name] = out / "climate" / f"{name}.tif"
        _write_climate(paths[name], clim)

    land = ~water
    species = _design_species(np.random.default_rng(ss_species), current, land, n_species)
    climates = {"current": current, **futures}
    suit = np.stack([np.stack([_suitability(sp, clim) for sp in species]) for clim in climates.values()])
    suit[:, :, water] = 0.0
    presence = (suit >= PRESENCE_THRESHOLD) & land
    suit = suit.astype(np.float32)

    table = _species_table(species, presence[0])
    occ, n_records = _occurrences(np.random.default_rng(ss_occ), table["species"].tolist(), presence[0], elev,
                                  towns)
    table["n_records"] = n_records
    rl, assessed = _redlist(np.random.default_rng(ss_redlist), table, unassessed_share)
    table["assessed"] = assessed

    paths["occurrences"] = out / "occurrences.csv"
    occ.to_csv(paths["occurrences"], index=False)
    paths["redlist"] = out / "redlist.csv"
    rl.to_csv(paths["redlist"], index=False)
    paths["truth_species"] = out / "truth" / "species.csv"
    table.to_csv(paths["truth_species"], index=False, float_format="%.6g")
    paths["truth_presence"] = out / "truth" / "presence.zarr"
    write_zarr(_truth_dataset(list(climates), table["species"].tolist(), suit, presence.astype(np.uint8)),
               paths["truth_presence"])
    return paths


def load_truth(demo_dir: str | Path) -> tuple[pd.DataFrame, xr.Dataset]:
    """Read back ``truth/species.csv`` and ``truth/presence.zarr`` written by ``generate_demo``.

    The Dataset holds ``suitability`` (float32, 0-1) and ``presence`` (uint8 0/1) with dims
    (scenario, species, y, x); x/y are cell centres in EPSG:3035 metres. Arrays are lazy (dask).
    """
    demo_dir = Path(demo_dir)
    table = pd.read_csv(demo_dir / "truth" / "species.csv")
    # decode_coords="all" turns the grid_mapping attribute back into the spatial_ref coordinate, so .rio.crs works
    ds = xr.open_zarr(demo_dir / "truth" / "presence.zarr", consolidated=False, decode_coords="all")
    return table, ds


def criterion_b_category(eoo_km2: float, aoo_km2: float) -> str:
    """IUCN category from criterion B alone: the most threatened of B1 (EOO, km2) and B2 (AOO, km2).

    Subcriteria (fragmentation, continuing decline) are taken as met; NT is EOO < 30,000 or AOO < 3,000 km2.
    """
    def by(limits, value):
        return next((cat for cat, lim in limits if value < lim), "LC")

    return max(by(_EOO_LIMITS, eoo_km2), by(_AOO_LIMITS, aoo_km2), key=CATEGORIES.index)


def range_metrics(presence: np.ndarray, cell_km: float = CELL_M / 1000.0) -> tuple[float, float, float]:
    """True range, EOO and AOO (km2) of a boolean (y, x) presence grid.

    EOO is the convex hull area of present cell centres (0 for fewer than 3 non-collinear cells); AOO counts
    occupied 2 x 2 km cells of a grid aligned with the raster's origin, times 4.
    """
    iy, ix = np.nonzero(presence)
    if iy.size == 0:
        return 0.0, 0.0, 0.0
    area = iy.size * cell_km**2
    # The hull of a grid set is the hull of each row's two end cells: far fewer points, same area.
    rows_present, first = np.unique(iy, return_index=True)
    last = np.r_[first[1:], iy.size] - 1  # np.nonzero is row-major, so each row's columns are sorted
    ends = np.column_stack([np.r_[ix[first], ix[last]], np.r_[rows_present, rows_present]]) * cell_km
    eoo = float(shapely.MultiPoint(ends).convex_hull.area)
    block = max(1, int(round(2.0 / cell_km)))
    aoo = np.unique((iy // block) * (presence.shape[1] // block + 1) + ix // block).size * 4.0
    return float(area), eoo, float(aoo)


# ---------------------------------------------------------------------------------------------------------------
# terrain and climate


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], beta: float = 3.0) -> np.ndarray:
    """Fractal noise (power spectrum ~ 1/f**beta), zero mean and unit SD."""
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    f = np.hypot(fy, fx)
    f[0, 0] = np.inf  # drop the mean
    spectrum = np.fft.rfft2(rng.standard_normal(shape)) * f ** (-beta / 2.0)
    field = np.fft.irfft2(spectrum, s=shape)
    return (field - field.mean()) / field.std()


def _grid_fractions(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """(u, v): cell-centre position as a fraction of the world, u west->east, v north->south."""
    v, u = np.meshgrid((np.arange(rows) + 0.5) / rows, (np.arange(cols) + 0.5) / cols, indexing="ij")
    return u, v


def _terrain(rng: np.random.Generator, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Elevation (m), water mask and observer towns (k, 2 cell indices), all shaped like the grid."""
    u, v = _grid_fractions(rows, cols)
    # Features are sized relative to the world so a small test world still has mountains and a lake.
    ridge_v = 0.38 + 0.08 * np.sin(2 * np.pi * (u * rng.uniform(0.6, 1.2) + rng.uniform()))
    h = 0.9 * np.exp(-0.5 * ((v - ridge_v) / 0.17) ** 2)
    for _ in range(rng.integers(8, 15)):
        cu, cv = rng.uniform(0.0, 1.0), np.clip(rng.normal(0.4, 0.2), 0.0, 1.0)
        w = rng.uniform(0.03, 0.10)
        h += rng.uniform(0.3, 0.9) * np.exp(-0.5 * ((u - cu) ** 2 + (v - cv) ** 2) / w**2)
    h += 0.18 * _smooth_noise(rng, (rows, cols), 3.2) + 0.05 * _smooth_noise(rng, (rows, cols), 2.2)
    h *= 1.0 - 0.75 * np.clip((v - 0.6) / 0.4, 0.0, 1.0)  # a southern foreland plain, like the Po side

    # A long north-south lake in the southern foothills, like Lago Maggiore or Como; the land around it is low.
    lu, lv = rng.uniform(0.25, 0.75), rng.uniform(0.65, 0.8)
    dist = np.hypot((u - lu) / 0.09, (v - lv) / 0.22) + 0.25 * _smooth_noise(rng, (rows, cols), 3.0)
    h -= 0.8 * np.exp(-0.5 * np.clip(dist, 0.0, None) ** 2)
    water = dist <= np.quantile(dist, _WATER_SHARE)

    land_h = h[~water]
    h01 = np.clip((h - land_h.min()) / (land_h.max() - land_h.min()), 0.0, 1.0)
    elev = 200.0 + 3300.0 * h01**1.4  # the power widens the valleys and sharpens the summits

    # Observers live in low valleys: towns are drawn among land cells, favouring low elevation.
    weight = np.where(water, 0.0, np.exp(-(elev - 200.0) / 250.0)).ravel()
    idx = rng.choice(weight.size, size=5, replace=False, p=weight / weight.sum())
    towns = np.column_stack(np.unravel_index(idx, (rows, cols)))
    return elev, water, towns


def _current_climate(elev: np.ndarray, water: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Present-day bioclim variables (see ``UNITS``) as float64 (y, x) arrays, NaN on water."""
    rows, cols = elev.shape
    u, v = _grid_fractions(rows, cols)
    north_km = (1.0 - v) * rows * CELL_M / 1000.0
    ekm = elev / 1000.0
    bio1 = 13.0 - 6.5 * ekm - 0.006 * north_km + 0.3 * _smooth_noise(rng, elev.shape, 2.5)
    # Continentality grows eastwards; valley floors have stronger seasonality (winter cold-air pools).
    bio4 = 590.0 + 90.0 * u - 25.0 * ekm + 12.0 * _smooth_noise(rng, elev.shape, 3.0)
    bio6 = bio1 - 1.45 * bio4 / 100.0 - 3.5 + 0.4 * _smooth_noise(rng, elev.shape, 2.5)
    # Westerlies: wetter west, orographic rise with height and on west-facing (windward) slopes.
    slope_east = np.gradient(elev, axis=1) / (CELL_M / 1000.0)  # m per km, positive where the ground rises east
    bio12 = (1250.0 - 550.0 * u + 420.0 * ekm + 1.5 * np.clip(slope_east, -150.0, 150.0)
             + 90.0 * _smooth_noise(rng, elev.shape, 3.0))
    bio12 = np.maximum(bio12, 350.0)
    # Mediterranean influence in the south and a summer maximum in the east make rainfall more seasonal.
    bio15 = 18.0 + 16.0 * v + 8.0 * u - 2.0 * ekm + 2.0 * _smooth_noise(rng, elev.shape, 3.0)
    bio15 = np.maximum(bio15, 5.0)
    clim = {"bio1": bio1, "bio4": bio4, "bio6": bio6, "bio12": bio12, "bio15": bio15}
    return {k: np.where(water, np.nan, a) for k, a in clim.items()}


def _future_climate(current: dict[str, np.ndarray], elev: np.ndarray, water: np.ndarray, warming: float,
                    precip_change: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A future scenario: ``warming`` degC on annual temperature, ``precip_change`` fractional rainfall change.

    Warming is a little stronger at height (elevation-dependent warming, +/-6 %/km around 1500 m) and winter
    minima warm faster than the mean. The rainfall change is not uniform: the south dries more than the north and
    a smooth regional pattern shifts rain between valleys, averaging ``precip_change`` over the world.
    """
    rows, cols = elev.shape
    _, v = _grid_fractions(rows, cols)
    dt = warming * (1.0 + 0.06 * (elev - 1500.0) / 1000.0)
    pattern = 1.0 + 0.6 * (2.0 * v - 1.0) + 0.3 * _smooth_noise(rng, elev.shape, 3.0)
    factor = np.maximum(1.0 + precip_change * pattern, 0.2)
    fut = {
        "bio1": current["bio1"] + dt,
        "bio4": current["bio4"] + 6.0 * warming,
        "bio6": current["bio6"] + 1.2 * dt,
        "bio12": current["bio12"] * factor,
        "bio15": current["bio15"] * (1.0 - 0.5 * precip_change * pattern),
    }
    return {k: np.where(water, np.nan, a) for k, a in fut.items()}


def _as_written(clim: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The climate rounded to the float32 values stored in the GeoTIFFs (kept as float64 for arithmetic)."""
    return {k: a.astype(np.float32).astype(np.float64) for k, a in clim.items()}


def _write_climate(path: Path, clim: dict[str, np.ndarray]) -> None:
    """One float32 GeoTIFF band per variable in ``VARIABLES`` order; band descriptions are the names."""
    rows, cols = clim["bio1"].shape
    profile = {
        "driver": "GTiff", "width": cols, "height": rows, "count": len(VARIABLES), "dtype": "float32",
        "crs": CRS, "transform": Affine(CELL_M, 0.0, ORIGIN[0], 0.0, -CELL_M, ORIGIN[1]), "nodata": np.nan,
        "compress": "deflate", "predictor": 3,
    }
    with rasterio.open(path, "w", **profile) as dst:
        for band, name in enumerate(VARIABLES, start=1):
            dst.write(clim[name].astype(np.float32), band)
            dst.set_band_description(band, name)
            dst.set_band_unit(band, UNITS[name])


# ---------------------------------------------------------------------------------------------------------------
# species


def _species_names(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` unique Latin-looking binomials."""
    n_combos = len(_GENERA) * len(_EPITHETS)
    if n > n_combos:
        raise ValueError(f"at most {n_combos} species can be named")
    pick = rng.choice(n_combos, size=n, replace=False)
    return [f"{_GENERA[i // len(_EPITHETS)]} {_EPITHETS[i % len(_EPITHETS)]}" for i in pick]


def _target_counts(n: int) -> list[str]:
    """Target category per species, in ``_TARGET_SHARE`` proportions (largest remainder)."""
    exact = {c: n * s for c, s in _TARGET_SHARE.items()}
    counts = {c: int(np.floor(x)) for c, x in exact.items()}
    for c in sorted(exact, key=lambda c: counts[c] - exact[c])[: n - sum(counts.values())]:
        counts[c] += 1
    return [c for c in CATEGORIES for _ in range(counts[c])]


def _design_species(rng: np.random.Generator, clim: dict[str, np.ndarray], land: np.ndarray,
                    n_species: int) -> list[dict]:
    """Niches fitted to target range sizes so that every criterion B category occurs.

    A niche is a Gaussian response per variable, ``exp(-0.5 ((x - opt) / tol)**2)``, multiplied over its
    variables. For a target range of N km2 the optimum is the climate of a random land cell and the tolerances
    are scaled so that exactly the N climatically nearest land cells reach suitability 0.5. Since EOO also
    depends on how scattered those cells are, a design whose criterion B category misses the target is redrawn.
    """
    names = _species_names(rng, n_species)
    targets = rng.permutation(_target_counts(n_species))
    ys, xs = np.nonzero(land)
    values = {k: a[land] for k, a in clim.items()}
    sd = {k: float(a.std()) for k, a in values.items()}
    n_land = ys.size
    cut = 2.0 * np.log(1.0 / PRESENCE_THRESHOLD)  # squared standardized distance where suitability = threshold
    species = []
    for name, target in zip(names, targets):
        lo, hi = _TARGET_RANGE_KM2[target]
        hi = min(hi, 0.9 * n_land)
        lo = min(lo, hi)
        best = None
        for _ in range(_DESIGN_TRIES):
            # bio1 and bio12 always; narrow species usually get a third axis, which pins them to one place.
            extra_p = 0.85 if target in ("CR", "EN") else 0.4
            variables = ["bio1", "bio12"] + ([str(rng.choice(["bio4", "bio6", "bio15"]))]
                                             if rng.uniform() < extra_p else [])
            centre = rng.integers(n_land)
            n_cells = int(np.clip(round(np.exp(rng.uniform(np.log(lo), np.log(hi)))), 1, n_land))
            shape = {k: sd[k] * rng.uniform(0.6, 1.6) for k in variables}
            # 6 significant digits, as written to species.csv, so the table reproduces the stored truth exactly
            opt = {k: float(f"{values[k][centre]:.6g}") for k in variables}
            d2 = sum(((values[k] - opt[k]) / shape[k]) ** 2 for k in variables)
            part = np.partition(d2, [n_cells - 1, min(n_cells, n_land - 1)])
            edge = 0.5 * (part[n_cells - 1] + part[min(n_cells, n_land - 1)])  # halfway to the next cell
            scale = np.sqrt(max(edge, 1e-12) / cut)
            tol = {k: float(f"{shape[k] * scale:.6g}") for k in variables}
            sp = {"species": name, "variables": variables, "opt": opt, "tol": tol}
            pres = np.zeros(land.shape, bool)
            pres[land] = _suitability(sp, values) >= PRESENCE_THRESHOLD
            cat = criterion_b_category(*range_metrics(pres)[1:])
            miss = abs(CATEGORIES.index(cat) - CATEGORIES.index(target))
            if best is None or miss < best[0]:
                best = (miss, sp)
            if miss == 0:
                break
        species.append(best[1])
    return sorted(species, key=lambda s: s["species"])


def _suitability(sp: dict, clim: dict[str, np.ndarray]) -> np.ndarray:
    """Product of Gaussian responses (0-1) over the species' variables; NaN climate gives 0."""
    d2 = sum(((clim[k] - sp["opt"][k]) / sp["tol"][k]) ** 2 for k in sp["variables"])
    return np.nan_to_num(np.exp(-0.5 * d2), nan=0.0)


def _species_table(species: list[dict], presence: np.ndarray) -> pd.DataFrame:
    """Truth per species: niche (opt/tol per variable, NaN where unused), range metrics (km2) and category."""
    rows = []
    for sp, pres in zip(species, presence):
        rec = {"species": sp["species"], "variables": " ".join(sp["variables"])}
        for k in VARIABLES:
            rec[f"{k}_opt"] = sp["opt"].get(k, np.nan)
            rec[f"{k}_tol"] = sp["tol"].get(k, np.nan)
        area, eoo, aoo = range_metrics(pres)
        rec.update(true_range_km2=area, eoo_km2=round(eoo, 3), aoo_km2=aoo,
                   true_category=criterion_b_category(eoo, aoo))
        rows.append(rec)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------------------
# observations


def _occurrences(rng: np.random.Generator, names: list[str], presence: np.ndarray, elev: np.ndarray,
                 towns: np.ndarray) -> tuple[pd.DataFrame, list[int]]:
    """GBIF-like records (species, decimalLongitude, decimalLatitude as text) and the clean count per species.

    The count per species excludes the broken rows and the verbatim repeats.

    Records come only from true presence cells, weighted by observer effort: high near towns, low at height.
    Points are jittered within their cell. About 1.5 % of records are repeated verbatim (the same record
    published twice) and about 1 % of rows are broken in the ways real downloads are.
    """
    rows, cols = elev.shape
    iy, ix = np.mgrid[0:rows, 0:cols]
    reach = 0.08 * max(rows, cols)  # cells; towns' pull fades over a valley's length
    near = sum(np.exp(-0.5 * ((iy - ty) ** 2 + (ix - tx) ** 2) / reach**2) for ty, tx in towns)
    effort = (0.05 + near) * np.exp(-(elev - 200.0) / 1000.0)

    ranges = presence.reshape(len(names), -1).sum(axis=1)
    rank = (np.argsort(np.argsort(ranges)) + 0.5) / len(names)
    # Log-uniform 15..400, mostly ordered by range size so that narrow species are rarely recorded.
    score = 0.7 * rank + 0.3 * rng.uniform(size=len(names))
    frac = (np.argsort(np.argsort(score)) + 0.5) / len(names)
    n_rec = np.maximum(8, np.round(np.exp(np.log(15) + frac * np.log(400 / 15)))).astype(int)

    to_wgs84 = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    frames, counts = [], []
    for name, pres, n in zip(names, presence, n_rec):
        cells = np.flatnonzero(pres)
        if cells.size == 0:
            counts.append(0)
            continue
        w = effort.ravel()[cells]
        pick = rng.choice(cells, size=n, replace=True, p=w / w.sum())
        cy, cx = np.unravel_index(pick, (rows, cols))
        # Jitter stays 10 m inside the cell so that rounding to 1e-6 degrees cannot move a point out of it.
        x = ORIGIN[0] + (cx + 0.5 + rng.uniform(-0.49, 0.49, n)) * CELL_M
        y = ORIGIN[1] - (cy + 0.5 + rng.uniform(-0.49, 0.49, n)) * CELL_M
        lon, lat = to_wgs84.transform(x, y)
        frames.append(pd.DataFrame({"species": name, "decimalLongitude": [f"{a:.6f}" for a in lon],
                                    "decimalLatitude": [f"{a:.6f}" for a in lat]}))
        counts.append(int(n))
    clean = pd.concat(frames, ignore_index=True)

    dupes = clean.iloc[rng.choice(len(clean), size=max(1, round(0.015 * len(clean))), replace=False)]
    n_bad = max(7, round(0.01 * len(clean)))
    # Each broken row damages a real record of its species, so the species names look right.
    src = clean.iloc[np.sort(rng.choice(len(clean), size=n_bad, replace=False))]
    bad = []
    for i, (name, lon, lat) in enumerate(src.itertuples(index=False)):
        lon_f, lat_f = float(lon), float(lat)
        bad.append([
            (name, "", ""),  # coordinates missing
            (name, f"{lon_f:.4f}".replace(".", ","), f"{lat_f:.4f}".replace(".", ",")),  # decimal comma
            (name, "unknown", lat),  # free text
            (name, lon, f"{lat_f + 90.0:.6f}"),  # latitude beyond 90
            (name, lat, lon),  # latitude and longitude swapped: far outside the grid
            (name, f"{lon_f - 12.4:.6f}", f"{lat_f - 6.2:.6f}"),  # a valid point far away (Iberia)
            (name, "0", "0"),  # null island
        ][i % 7])
    bad = pd.DataFrame(bad, columns=["species", "decimalLongitude", "decimalLatitude"])
    allrows = pd.concat([clean, dupes, bad], ignore_index=True)
    allrows = allrows.iloc[rng.permutation(len(allrows))].reset_index(drop=True)
    return allrows, counts


def _redlist(rng: np.random.Generator, table: pd.DataFrame, unassessed_share: float) -> tuple[pd.DataFrame, list[bool]]:
    """Red List rows (scientificName, redlistCategory) for assessed species, plus 1-2 Data Deficient ones."""
    n = len(table)
    n_un = int(round(unassessed_share * n))
    unassessed = set(rng.choice(n, size=n_un, replace=False).tolist()) if n_un else set()
    assessed = [i not in unassessed for i in range(n)]
    rl = pd.DataFrame({"scientificName": table["species"][assessed],
                       "redlistCategory": table["true_category"][assessed].map(REDLIST_NAMES)})
    dd = sorted(unassessed)[: min(2, n_un)]
    rl = pd.concat([rl, pd.DataFrame({"scientificName": table["species"].iloc[dd],
                                      "redlistCategory": "Data Deficient"})])
    return rl.sort_values("scientificName").reset_index(drop=True), assessed


def _truth_dataset(scenarios: list[str], names: list[str], suit: np.ndarray, presence: np.ndarray) -> xr.Dataset:
    """Suitability (float32 0-1) and presence (uint8) over (scenario, species, y, x), cell centres in EPSG:3035."""
    _, _, rows, cols = suit.shape
    x = ORIGIN[0] + (np.arange(cols) + 0.5) * CELL_M
    y = ORIGIN[1] - (np.arange(rows) + 0.5) * CELL_M
    dims = ("scenario", "species", "y", "x")
    ds = xr.Dataset(
        {
            "suitability": (dims, suit, {"units": "1", "long_name": "true habitat suitability"}),
            "presence": (dims, presence, {"units": "1",
                                          "long_name": f"true presence (suitability >= {PRESENCE_THRESHOLD} on land)"}),
        },
        coords={"scenario": np.array(scenarios, dtype=object), "species": np.array(names, dtype=object),
                "y": y, "x": x},
        attrs={"presence_threshold": PRESENCE_THRESHOLD, "cell_size_m": CELL_M},
    )
    for v in ("suitability", "presence"):
        ds[v].encoding["chunks"] = (1, 1, rows, cols)
    return ds.rio.write_crs(CRS)
