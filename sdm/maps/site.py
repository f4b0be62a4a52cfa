"""Every page of a run's ``maps`` folder from its indicator GeoTIFFs, metrics and statuses."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sdm.maps.index import index_page
from sdm.maps.indicator import indicator_map
from sdm.maps.styles import INDICATORS

def render_maps(
    layers: dict[str, dict[str, Path]],
    out_dir: str | Path,
    metrics: dict,
    species_table: pd.DataFrame | None = None,
    tiles: str | None = None,
) -> dict[str, Path]:
    """All indicator maps of a run set in ``out_dir``, and ``out_dir/index.html`` linking them.

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
    for name in INDICATORS:
        runs = {run: Path(path) for run, path in layers.get(name, {}).items()}
        if INDICATORS[name].get("layers") == "scenario":
            per_scenario: dict[str, Path] = {}
            for run, path in runs.items():
                per_scenario.setdefault(run.rsplit("_", 1)[0], path)
            runs = per_scenario
        if runs:
            written[name] = indicator_map(runs, name, out_dir / f"{name}.html", out_dir / "lib", tiles=tiles)
    links = {INDICATORS[name]["title"]: path for name, path in written.items()}
    written["index"] = index_page(links, metrics, out_dir / "index.html", species_table)
    return written


def layers_from_paths(paths, runs: list[str]) -> dict[str, dict[str, Path]]:
    """{indicator: {run: path}} of ``{...}/{run}/{indicator}.tif`` paths, runs in the order of ``runs``."""
    layers: dict[str, dict[str, Path]] = {}
    for path in sorted(map(Path, paths), key=lambda p: runs.index(p.parent.name)):
        layers.setdefault(path.stem, {})[path.parent.name] = path
    return layers
