"""The species explorer (``maps/species.html``): search any species, see its Red List label, predicted category and
class probabilities, criterion B and A3 per run, its range area across runs, and on a map its current suitability,
current presence, presence in each future run and its cleaned records.

The page itself holds only the species list. Each species' layers are small palettised PNGs on the Web Mercator
display grid, written with its records and statuses into ``species/{i}.js``, which the page loads with a
``<script>`` element when the species is chosen: that works from ``file://`` (no server), where ``fetch`` does not.
"""

from __future__ import annotations

import base64
import html as _html
import io
import math
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr
from PIL import Image

from sdm.maps.assets import ERROR_PROBE, OUTLINE_STYLE, VIEW_HASH_JS, check_offline_attributes, copy_assets, relative_url, \
    script_json, write_atomic
from sdm.maps.display import lonlat_bounds, longitudes_near, to_web_mercator
from sdm.maps.styles import CATEGORY_NAMES, IUCN_COLOURS, hex_rgb
from sdm.redlist import CATEGORIES

EXPLORER_MAX_PX = 1024
"""Longest side, in pixels, of a species layer on the display grid."""
SUITABILITY_LEVELS = 10
"""Suitability is drawn in this many equal classes of [0, 1] (palettised PNG: small files)."""
_SUITABILITY_COLOURS = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58",
                        "#b5de2b", "#fde725"]
PRESENCE_COLOURS = {"current": "#1b7837", "future": "#c2185b"}


def display_cells(grid: xr.DataArray, max_px: int = EXPLORER_MAX_PX) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of ``grid`` kept for display: every k-th, so that no side exceeds ``2 * max_px`` cells
    (the display grid then samples them by nearest neighbour). The same cells for every layer and species."""
    ny, nx = grid.sizes["y"], grid.sizes["x"]
    step = max(1, math.ceil(max(ny, nx) / (2 * max_px)))
    return np.arange(step // 2, ny, step), np.arange(step // 2, nx, step)


def display_index(grid: xr.DataArray, max_px: int = EXPLORER_MAX_PX) -> dict:
    """Nearest-neighbour lookup from the Web Mercator display grid to the cells of ``grid`` (a (y, x) array with a
    CRS): ``index`` int32 (rows, cols) of flat cell numbers (-1 outside the grid) and ``bounds``
    ``[[south, west], [north, east]]`` in degrees. Geographic grids are cut at +-85 degrees (Web Mercator's edge)."""
    ny, nx = grid.sizes["y"], grid.sizes["x"]
    ids = xr.DataArray(np.arange(ny * nx, dtype="int32").reshape(ny, nx), dims=("y", "x"),
                       coords={"y": grid["y"], "x": grid["x"]}).rio.write_crs(grid.rio.crs).rio.write_nodata(-1)
    merc = to_web_mercator(ids, max_px, -1)
    return {"index": np.asarray(merc.values, dtype="int32"), "bounds": lonlat_bounds(merc)}


def _png(codes: np.ndarray, palette: list[str]) -> str:
    """A palettised PNG data URL of ``codes`` (uint8; 0 = transparent, i = ``palette[i - 1]``)."""
    image = Image.fromarray(codes.astype("uint8"), mode="P")
    rgb = [0, 0, 0] + [v for colour in palette for v in hex_rgb(colour)]
    image.putpalette(rgb + [0] * (768 - len(rgb)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True, transparency=0)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def suitability_png(values: np.ndarray, index: np.ndarray) -> str:
    """Suitability (float, [0, 1], NaN no data) of the kept cells, drawn on the display grid in
    ``SUITABILITY_LEVELS`` classes."""
    flat = values.ravel()
    shown = np.where(index >= 0, flat[np.maximum(index, 0)], np.nan)
    classes = np.where(np.isfinite(shown), np.minimum(np.floor(np.nan_to_num(shown) * SUITABILITY_LEVELS),
                                                      SUITABILITY_LEVELS - 1) + 1, 0)
    return _png(classes, _SUITABILITY_COLOURS)


def presence_png(values: np.ndarray, index: np.ndarray, colour: str) -> str:
    """Presence (bool) of the kept cells drawn on the display grid in one colour."""
    shown = (index >= 0) & values.ravel()[np.maximum(index, 0)]
    return _png(shown.astype("uint8"), [colour])


def _sort_key(name: str) -> str:
    """A species name without accents or case, so that "Épipactis" lists among the Es, not after Z."""
    return "".join(c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c)).casefold()


def _records_of(records: pd.DataFrame, bounds: list) -> dict[str, list]:
    """species -> [[lat, lon], ...] rounded to 4 decimals (about 10 m), duplicates merged; longitudes moved by
    whole turns to the copy nearest the overlay's centre (``bounds`` [[south, west], [north, east]]), so that a
    record at -170 lies on an overlay that runs from 170 to 190."""
    centre = (bounds[0][1] + bounds[1][1]) / 2.0
    rounded = records.assign(latitude=records["latitude"].round(4),
                             longitude=longitudes_near(records["longitude"].to_numpy(), centre).round(4))
    rounded = rounded.drop_duplicates(["species", "latitude", "longitude"])
    return {str(s): g[["latitude", "longitude"]].to_numpy().tolist() for s, g in rounded.groupby("species", sort=False)}


def _status_of(status: pd.DataFrame | None, runs: list[str]) -> dict[str, dict]:
    """species -> what the panel shows: Red List label, the classifier's category and probabilities, criterion B
    (present), and per run the range area, its loss, the A3 category and the status."""
    if status is None or status.empty:
        return {}
    table = status.assign(run=status["scenario"].astype(str) + "_" + status["dispersal"].astype(str))
    proba = [f"p_{c}" for c in CATEGORIES if f"p_{c}" in table.columns]
    out: dict[str, dict] = {}
    for species, rows in table.groupby("species", sort=False):
        rows = rows.set_index("run")
        now = rows.loc["current_none"] if "current_none" in rows.index else rows.iloc[0]
        entry = {
            "redlist": _text(now.get("redlist_category")),
            "predicted": _text(now.get("category_classifier", now.get("status"))),
            "status": _text(now.get("status")),
            "criterion_b": _text(now.get("category_b")),
            "probabilities": {c[2:]: _number(now.get(c)) for c in proba},
            "runs": [],
        }
        for run in runs:
            if run in rows.index:
                row = rows.loc[run]
                entry["runs"].append({"run": run, "range_km2": _number(row.get("range_km2")),
                                      "range_loss": _number(row.get("range_loss")),
                                      "a3": _text(row.get("category_a3")), "status": _text(row.get("status")),
                                      "threatened_agreement": _number(row.get("threatened_agreement"))})
        out[str(species)] = entry
    return out


def _text(value) -> str | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) or pd.isna(value) else str(value)


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else round(number, 4)


def species_explorer(predictions: dict[str, xr.Dataset], runs: list[str], records: pd.DataFrame,
                     status: pd.DataFrame | None, out_dir: str | Path, *, min_records: int | None = None,
                     max_px: int = EXPLORER_MAX_PX, batch_cells: int = 200_000_000,
                     outlines: Path | None = None) -> Path:
    """Write ``out_dir/species.html`` and one ``out_dir/species/{i}.js`` per species.

    ``predictions``: scenario (``current`` and each future scenario) -> decoded predictions (``suitability``
    float [0, 1], ``presence`` bool; ``species``, ``y``, ``x``), already reduced to the display cells
    (:func:`display_cells`) and all on the same cells. ``runs``: ``current_none`` and ``{scenario}_{dispersal}``
    (``none``: future presence inside the current one). ``records``: cleaned records (``species``, ``longitude``,
    ``latitude``). ``status``: the long status table (``sdm.status``), or None without a Red List. Species with
    records but no model (too few records) get their records and statuses only. Species are processed in batches
    of at most ``batch_cells`` species x cells. ``outlines``: ``lib/regions.js``, drawn as a thin context layer.
    """
    out_dir = Path(out_dir)
    data_dir = out_dir / "species"
    data_dir.mkdir(parents=True, exist_ok=True)
    current = predictions["current"]
    lookup = display_index(current["suitability"].isel(species=0, drop=True), max_px)
    modelled = [str(s) for s in current["species"].values]
    by_species = _records_of(records, lookup["bounds"])
    counts = records["species"].astype(str).value_counts().to_dict()  # every cleaned record, not distinct places
    statuses = _status_of(status, runs)
    names = sorted(set(modelled) | set(by_species) | set(statuses), key=_sort_key)
    number = {name: i for i, name in enumerate(names)}
    cells = current.sizes["y"] * current.sizes["x"]
    batch = max(1, batch_cells // max(cells * (len(predictions) + 1), 1))
    future_runs = [r for r in runs if r != "current_none"]

    for start in range(0, len(modelled), batch):
        chunk = modelled[start:start + batch]
        now = current.sel(species=chunk)
        suitability = now["suitability"].values
        present = now["presence"].values
        futures = {s: ds["presence"].sel(species=chunk).values for s, ds in predictions.items() if s != "current"}
        for j, name in enumerate(chunk):
            layers = [
                {"label": "Current suitability", "kind": "suitability",
                 "png": suitability_png(suitability[j], lookup["index"])},
                {"label": "Current presence", "kind": "presence",
                 "png": presence_png(present[j], lookup["index"], PRESENCE_COLOURS["current"])},
            ]
            for run in future_runs:
                scenario, dispersal = run.rsplit("_", 1)
                if scenario not in futures:
                    continue
                future = futures[scenario][j] & present[j] if dispersal == "none" else futures[scenario][j]
                layers.append({"label": f"Presence {run}", "kind": "presence", "run": run,
                               "png": presence_png(future, lookup["index"], PRESENCE_COLOURS["future"])})
            _write_species(data_dir, number[name], name, layers, by_species, statuses, counts)
    for name in names:
        if name not in set(modelled):
            _write_species(data_dir, number[name], name, [], by_species, statuses, counts)

    index = [{"name": name, "file": f"species/{number[name]}.js", "modelled": name in set(modelled),
              "category": (statuses.get(name) or {}).get("status"),
              "records": len(by_species.get(name, []))} for name in names]
    return _write_page(out_dir, index, lookup["bounds"], min_records, outlines)


def _write_species(data_dir: Path, number: int, name: str, layers: list[dict], records: dict, statuses: dict,
                   counts: dict) -> None:
    """``species/{number}.js``: the species' layers, its distinct record places (``records``), its number of
    cleaned records (``n_records``) and its status panel."""
    payload = {"name": name, "layers": layers, "records": records.get(name, []), "n_records": int(counts.get(name, 0)),
               **(statuses.get(name) or {})}
    write_atomic(data_dir / f"{number}.js", f"window.sdmSpeciesLoaded({script_json(payload)});\n")


def _write_page(out_dir: Path, index: list[dict], bounds: list, min_records: int | None,
                outlines: Path | None) -> Path:
    out_html = out_dir / "species.html"
    assets = copy_assets(out_dir / "lib")
    url = {name: relative_url(path, out_dir) for name, path in assets.items()}
    config = {"species": index, "bounds": bounds, "categories": list(CATEGORIES),
              "names": CATEGORY_NAMES, "colours": IUCN_COLOURS, "suitability": _SUITABILITY_COLOURS,
              "presence": PRESENCE_COLOURS, "min_records": min_records, "outline": OUTLINE_STYLE}
    page = "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', ERROR_PROBE,
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>Species explorer</title>",
        f'<link rel="stylesheet" href="{_html.escape(url["leaflet_css"])}">',
        f'<script src="{_html.escape(url["leaflet"])}"></script>',
        f'<script src="{_html.escape(relative_url(outlines, out_dir))}"></script>' if outlines else "",
        _EXPLORER_CSS, "</head><body>",
        '<aside id="panel"><h1>Species explorer</h1>',
        '<p class="back"><a href="index.html">All maps and metrics</a></p>',
        f'<input id="search" type="search" autocomplete="off" placeholder="Search {len(index)} species…" '
        'aria-label="Species name">',
        '<ul id="matches"></ul><section id="species" hidden></section></aside>',
        '<div id="map"></div>',
        f"<script>var SDM_EXPLORER = {script_json(config)};</script>",
        VIEW_HASH_JS, _EXPLORER_JS, "</body></html>",
    ])
    check_offline_attributes(page, out_html)
    write_atomic(out_html, page)
    return out_html


_EXPLORER_CSS = """<style>
  html, body { height: 100%; margin: 0; font: 13px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; }
  body { display: flex; }
  #panel { width: 400px; flex: none; overflow: auto; padding: 10px 14px; box-sizing: border-box;
    border-right: 1px solid #ccd; background: #f6f7f9; }
  #map { flex: 1; background: #dde1e6; }
  h1 { font-size: 18px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 10px 0 4px; font-style: italic; }
  h3 { font-size: 13px; margin: 10px 0 3px; }
  .back a { color: #1f5fa8; }
  #search { width: 100%; box-sizing: border-box; padding: 5px 7px; font-size: 14px; }
  #matches { list-style: none; margin: 4px 0; padding: 0; max-height: 240px; overflow: auto; }
  #matches li { padding: 2px 4px; cursor: pointer; font-style: italic; }
  #matches li:hover, #matches li.active { background: #dfe7f3; }
  .cat { display: inline-block; min-width: 26px; text-align: center; font-weight: 700; border-radius: 3px;
    padding: 0 4px; font-style: normal; }
  table { border-collapse: collapse; background: #fff; width: 100%; font-size: 12px; }
  td { overflow-wrap: anywhere; }
  th, td { border: 1px solid #d5d8de; padding: 2px 5px; text-align: left; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  .bar { height: 10px; background: #7b8da8; display: inline-block; vertical-align: middle; }
  .note { color: #555; }
  svg text { font-size: 10px; }
  .legend { background: rgba(255,255,255,0.9); padding: 4px 6px; border-radius: 4px; font-size: 12px; }
  .legend i { display: inline-block; width: 12px; height: 12px; margin-right: 4px; vertical-align: -2px; }
</style>"""

# Search, species loading (one <script> per species), the layers and the panel. Layer switching goes through
# Leaflet's layer control; the view (species, layer, zoom, centre) is kept in the URL hash (VIEW_HASH_JS).
_EXPLORER_JS = """<script>
(function () {
  var cfg = SDM_EXPLORER, box = document.getElementById("search"), list = document.getElementById("matches");
  var panel = document.getElementById("species");
  var map = L.map("map", {preferCanvas: true, zoomSnap: 0.25}).fitBounds(cfg.bounds);
  L.control.scale().addTo(map);
  var control = L.control.layers({}, {}, {collapsed: false}).addTo(map);
  var shown = {layers: [], records: null, name: null};
  if (window.SDM_REGIONS) {
    map.createPane("outlines");
    map.getPane("outlines").style.zIndex = 450;
    map.getPane("outlines").style.pointerEvents = "none";
    control.addOverlay(L.geoJSON(window.SDM_REGIONS, {style: cfg.outline, interactive: false, pane: "outlines"}).addTo(map),
                       "Region outlines");
  }
  var byName = Object.create(null);  // no inherited keys: a species named "constructor" is just a name
  cfg.species.forEach(function (s) { byName[s.name] = s; });
  var view = sdmView(map, "species", function () { return shown.name; }, null);
  function esc(t) {  // text safe inside elements and quoted attributes
    return (t == null ? "" : String(t)).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
  }
  function cat(c) {
    if (!c) { return "–"; }
    var colour = cfg.colours[c];
    return colour ? '<span class="cat" style="background:' + colour + '" title="' + esc(cfg.names[c] || c) + '">' +
      esc(c) + "</span>" : esc(c);
  }
  function fmt(v, d) { return v == null ? "–" : Number(v).toLocaleString("en", {maximumFractionDigits: d}); }
  function plain(t) {  // no case, no accents: "epipactis" finds "Épipactis"
    return t.normalize("NFD").replace(/[\u0300-\u036f]/g, "").toLowerCase();
  }
  function matches(q) {
    q = plain(q.trim());
    if (!q) { return []; }
    return cfg.species.filter(function (s) { return plain(s.name).indexOf(q) >= 0; }).slice(0, 50);
  }
  function showMatches() {
    var found = matches(box.value);
    list.innerHTML = found.map(function (s, i) {
      return '<li data-name="' + esc(s.name) + '"' + (i === 0 ? ' class="active"' : "") + ">" + esc(s.name) + " " +
        (s.category ? cat(s.category) : "") + "</li>";
    }).join("");
  }
  box.addEventListener("input", showMatches);
  box.addEventListener("keydown", function (e) {
    if (e.key === "Enter") { var first = matches(box.value)[0]; if (first) { choose(first.name); } }
  });
  list.addEventListener("click", function (e) {
    var li = e.target.closest("li"); if (li) { choose(li.getAttribute("data-name")); }
  });
  window.sdmSpeciesLoaded = function (data) { if (data.name === shown.name) { draw(data); } };
  function choose(name, layer) {
    var entry = byName[name]; if (!entry) { return; }
    shown.name = name; shown.wanted = layer || null;
    var script = document.createElement("script");
    script.src = entry.file;
    script.onload = function () { script.remove(); };
    document.head.appendChild(script);
  }
  window.sdmChoose = choose;
  function clear() {
    shown.layers.forEach(function (l) { map.removeLayer(l.layer); control.removeLayer(l.layer); });
    if (shown.records) { map.removeLayer(shown.records); control.removeLayer(shown.records); }
    shown.layers = []; shown.records = null;
  }
  function draw(data) {
    clear();
    data.layers.forEach(function (l) {
      var layer = L.imageOverlay(l.png, cfg.bounds, {opacity: 0.85, className: "species-layer"});
      layer.sdmLabel = l.label;
      shown.layers.push({label: l.label, layer: layer});
      control.addBaseLayer(layer, l.label);
    });
    var wanted = shown.layers.filter(function (l) { return l.label === shown.wanted; })[0] ||
      shown.layers[1] || shown.layers[0];
    view.setLayer(wanted ? wanted.label : null);  // a species without a model names no layer in the link
    if (wanted) { wanted.layer.addTo(map); }
    var points = data.records.map(function (r) {
      return L.circleMarker(r, {radius: 3, weight: 1, color: "#000", fillColor: "#fff", fillOpacity: 0.9});
    });
    shown.records = L.featureGroup(points).addTo(map);
    control.addOverlay(shown.records, "Records (" + data.records.length + " places)");
    if (!shown.keepView) {  // the species' records, or the whole grid for a species without any; not animated,
      // so that a species chosen while the last one's zoom still runs is not left at that one's view
      if (points.length) { map.fitBounds(shown.records.getBounds().pad(0.5), {maxZoom: 10, animate: false}); }
      else { map.fitBounds(cfg.bounds, {animate: false}); }
    }
    shown.keepView = false;
    panel.innerHTML = describe(data);
    panel.hidden = false;
    document.documentElement.setAttribute("data-species", data.name);
    view.save();
  }
  function describe(d) {
    var h = "<h2>" + esc(d.name) + "</h2><table>" +
      "<tr><th>Red List category</th><td>" + cat(d.redlist) + (d.redlist ? "" : " not assessed") + "</td></tr>" +
      "<tr><th>Predicted category</th><td id=\\"predicted\\">" + cat(d.predicted) + "</td></tr>" +
      "<tr><th>Status used (now)</th><td>" + cat(d.status) + "</td></tr>" +
      "<tr><th>Criterion B (preliminary)</th><td>" + esc(d.criterion_b || "–") + "</td></tr>" +
      "<tr><th>Cleaned records</th><td class=\\"num\\">" + fmt(d.n_records, 0) + "</td></tr>" +
      "<tr><th>Distinct places (10 m)</th><td class=\\"num\\">" + d.records.length + "</td></tr></table>";
    var p = d.probabilities || {};
    if (Object.keys(p).length) {
      h += "<h3>Class probabilities</h3><table>" + cfg.categories.map(function (c) {
        var v = p[c] == null ? 0 : p[c];
        return "<tr><td>" + cat(c) + "</td><td class=\\"num\\">" + fmt(v, 3) + "</td><td style=\\"width:55%\\">" +
          '<span class="bar" style="width:' + Math.round(100 * v) + '%"></span></td></tr>';
      }).join("") + "</table>";
    }
    if (!d.layers.length) {
      h += '<p class="note">No distribution model for this species' +
        (cfg.min_records ? " (fewer than " + cfg.min_records + " records in distinct cells)" : "") +
        ": records only.</p>";
    }
    var runs = d.runs || [];
    if (runs.length) {
      h += "<h3>Per run</h3><table><tr><th>Run</th><th>Range km²</th><th>Loss</th><th>A3</th><th>Status</th></tr>" +
        runs.map(function (r) {
          return "<tr><td>" + esc(r.run) + "</td><td class=\\"num\\">" + fmt(r.range_km2, 0) +
            "</td><td class=\\"num\\">" + (r.range_loss == null ? "–" : fmt(100 * r.range_loss, 0) + " %") +
            "</td><td>" + cat(r.a3) + "</td><td>" + cat(r.status) + "</td></tr>";
        }).join("") + "</table>" + chart(runs);
    }
    return h;
  }
  function chart(runs) {
    var values = runs.map(function (r) { return r.range_km2 || 0; });
    var top = Math.max.apply(null, values.concat([1])), w = 330, row = 16;
    var bars = runs.map(function (r, i) {
      var len = Math.round(150 * (r.range_km2 || 0) / top);
      return '<text x="0" y="' + (i * row + 11) + '">' + esc(r.run) + "</text>" +
        '<rect x="175" y="' + (i * row + 3) + '" width="' + len + '" height="10" fill="' +
        (r.run === "current_none" ? cfg.presence.current : cfg.presence.future) + '"></rect>';
    }).join("");
    return '<h3>Range area across runs</h3><svg id="range-chart" width="' + w + '" height="' + (runs.length * row + 4) +
      '">' + bars + "</svg>";
  }
  var legend = L.control({position: "bottomright"});
  legend.onAdd = function () {
    var div = L.DomUtil.create("div", "legend");
    div.innerHTML = "<b>Suitability</b><br>" + cfg.suitability.map(function (c, i) {
      return '<i style="background:' + c + '"></i>' + (i / cfg.suitability.length).toFixed(1) + "–" +
        ((i + 1) / cfg.suitability.length).toFixed(1);
    }).join("<br>") + '<br><i style="background:' + cfg.presence.current + '"></i>current presence<br>' +
      '<i style="background:' + cfg.presence.future + '"></i>future presence';
    return div;
  };
  legend.addTo(map);
  var start = view.restore();
  if (start.key && byName[start.key]) {
    shown.keepView = start.view; box.value = start.key; showMatches(); choose(start.key, start.layer);
  }
})();
</script>"""


SPECIES_PER_CHUNK = 16
"""Species per Zarr chunk of the explorer's scratch predictions (:func:`_materialised`)."""


def _materialised(predictions: xr.Dataset, path: Path) -> xr.Dataset:
    """Write lazy decoded predictions' codes and presence as a prediction store at ``path`` (one computation: each
    chunk's forward once for both) and open it decoded (:func:`sdm.predict.open_predictions`)."""
    from sdm.predict import open_predictions
    from sdm.storage import zarr_ready

    store = zarr_ready(xr.Dataset({"suitability": predictions["suitability_code"],
                                   "presence": predictions["presence"].astype("uint8")}).rio.write_crs(
        predictions.rio.crs))
    # stored SPECIES_PER_CHUNK species at a time (the forward's chunks hold every species): a batch of species
    # read back decompresses its own species only
    chunks = (min(SPECIES_PER_CHUNK, store.sizes["species"]), store.chunksizes["y"][0], store.chunksizes["x"][0])
    store.to_zarr(path, mode="w", consolidated=False, encoding={name: {"chunks": chunks} for name in store.data_vars})
    return open_predictions(path)


def display_predictions(sources: dict[str, str | Path], prediction: dict, model: str | Path | None = None,
                        device: str = "auto", threads: int | None = None,
                        max_px: int = EXPLORER_MAX_PX, average_k: dict[str, int] | None = None,
                        scratch: str | Path | None = None) -> dict[str, xr.Dataset]:
    """Every scenario's decoded predictions on the explorer's display cells (:func:`display_cells`).

    ``sources``: scenario -> prediction store, or with ``prediction["fused"]`` climate cube, the model forward
    then running on the display cells only. In fused mode with ``average_k``, ``average_k`` gives each scenario's
    threshold code set on the full grid (:func:`sdm.fused.average_k_threshold`); without it the threshold is set
    on the display cells, so presence can differ from the full grid's at the threshold's edge.

    Fused, with a ``scratch`` folder, each scenario's display predictions (uint8 codes and presence) are written
    there by one forward and read back from it (the folder must outlive their use); without, they stay lazy, and
    the explorer, which reads them a batch of species at a time, runs the forward of every species again for each
    batch (3 batches of 138 species on the 1/4 global band, 29 by the same rule for 989 species on the globe)."""
    from sdm.climate import open_cube
    from sdm.fused import lazy_predictions, prediction_options
    from sdm.predict import open_predictions

    out = {}
    for scenario, path in sources.items():
        if prediction.get("fused"):
            cube = open_cube(path)
            rows, cols = display_cells(cube.isel(variable=0), max_px)
            lazy = lazy_predictions(cube.isel(y=rows, x=cols), model, scenario=scenario, device=device,
                                    threads=threads, average_k=(average_k or {}).get(scenario),
                                    **prediction_options(prediction))
            out[scenario] = lazy if scratch is None else _materialised(lazy, Path(scratch) / f"{scenario}.zarr")
        else:
            stored = open_predictions(path)
            rows, cols = display_cells(stored["suitability"].isel(species=0), max_px)
            out[scenario] = stored.isel(y=rows, x=cols)
    return out
