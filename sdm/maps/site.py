"""Every page of a run's ``maps`` folder from its indicator GeoTIFFs, metrics and statuses."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sdm.maps.index import index_page
from sdm.maps.indicator import indicator_map
from sdm.maps.protection import protection_page
from sdm.maps.regions import regions_page, write_outlines
from sdm.maps.styles import INDICATORS


def render_maps(
    layers: dict[str, dict[str, Path]],
    out_dir: str | Path,
    metrics: dict,
    species_table: pd.DataFrame | None = None,
    tiles: str | None = None,
    *,
    config: dict | None = None,
    pages: dict[str, Path] | None = None,
    regions: dict | None = None,
    region_table: pd.DataFrame | None = None,
    protection: pd.DataFrame | None = None,
) -> dict[str, Path]:
    """All indicator maps of a run set in ``out_dir``, the pages that summarise them, and ``out_dir/index.html``
    linking them all and showing the run's ``config``.

    ``pages``: pages already written in ``out_dir`` (such as the species explorer), link text -> file.
    ``regions``: the region outlines as GeoJSON (:func:`sdm.regions.regions_geojson`), drawn on every map;
    ``region_table``: their summaries (:func:`sdm.regions.region_summary`) -> ``regions.html``. ``protection``:
    :func:`sdm.protection.protection_table` -> ``protection.html``.

    ``layers``: {indicator: {run: GeoTIFF}}, runs in display order; every file must exist (a missing layer is an
    error naming it, never a silently absent layer). ``*_change`` layers exist for future runs only,
    threatened-species layers only with a Red List. An indicator of the climate (``layers: "scenario"``, MESS) gets
    one layer per scenario, labelled with the scenario (``{scenario}_{dispersal}`` runs of one scenario hold the
    same raster). Maps are written as ``{out_dir}/{indicator}.html`` with the assets under ``{out_dir}/lib``.
    Returns indicator name -> map HTML, plus ``"index"`` -> ``index.html``.
    """
    unknown = sorted(set(layers) - set(INDICATORS))
    if unknown:
        raise ValueError(f"no map style for indicator(s) {unknown}; known: {sorted(INDICATORS)}")
    missing = [str(path) for runs in layers.values() for path in runs.values() if not Path(path).is_file()]
    if missing:
        raise FileNotFoundError(f"indicator layer(s) missing: {missing}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    outlines = write_outlines(regions, out_dir / "lib") if regions else None
    for name in INDICATORS:
        runs = {run: Path(path) for run, path in layers.get(name, {}).items()}
        if INDICATORS[name].get("layers") == "scenario":
            per_scenario: dict[str, Path] = {}
            for run, path in runs.items():
                per_scenario.setdefault(run.rsplit("_", 1)[0], path)
            runs = per_scenario
        if runs:
            written[name] = indicator_map(runs, name, out_dir / f"{name}.html", out_dir / "lib", tiles=tiles,
                                          outlines=outlines)
    links = {INDICATORS[name]["title"]: path for name, path in written.items()}
    summaries = dict(pages or {})
    if region_table is not None:
        if outlines is None:
            raise ValueError("render_maps: region_table without the regions' outlines")
        summaries["Indicators per region (choropleth and table)"] = written["regions"] = regions_page(
            region_table, outlines, out_dir / "regions.html", list(next(iter(layers.values()), {})))
    if protection is not None:
        gap = "threatened_unprotected.html" if "threatened_unprotected" in written else None
        summaries["Protection of threatened species (table)"] = written["protection"] = protection_page(
            protection, out_dir / "protection.html", gap)
    written["index"] = index_page(links, metrics, out_dir / "index.html", species_table, pages=summaries,
                                  config=config)
    return written


def layers_from_paths(paths, runs: list[str]) -> dict[str, dict[str, Path]]:
    """{indicator: {run: path}} of ``{...}/{run}/{indicator}.tif`` paths, runs in the order of ``runs``."""
    layers: dict[str, dict[str, Path]] = {}
    for path in sorted(map(Path, paths), key=lambda p: runs.index(p.parent.name)):
        layers.setdefault(path.stem, {})[path.parent.name] = path
    return layers
