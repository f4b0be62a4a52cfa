"""``maps/regions.html``: per-region summaries (``indicators/regions.csv``) as a choropleth with a sortable table,
and ``lib/regions.js``, the region outlines that every map draws as a thin context layer (an offline basemap)."""

from __future__ import annotations

import html as _html
from pathlib import Path

import pandas as pd

from sdm.maps.assets import ERROR_PROBE, SORTABLE_JS, VIEW_HASH_JS, check_offline_attributes, copy_assets, \
    relative_url, script_json, write_atomic
from sdm.maps.styles import CATEGORY_NAMES, INDICATORS, IUCN_COLOURS, PALETTES
from sdm.redlist import CATEGORIES

REGIONS_JS = "regions.js"
"""File name of the outline layer under the maps' ``lib`` folder."""



def write_outlines(geojson: dict, lib_dir: str | Path) -> Path:
    """``lib/regions.js``: ``window.SDM_REGIONS = <GeoJSON>`` (a script, so that pages opened from ``file://``
    can load it)."""
    path = Path(lib_dir) / REGIONS_JS
    write_atomic(path, f"window.SDM_REGIONS = {script_json(geojson)};\n")
    return path


def _value_columns(summary: pd.DataFrame) -> dict:
    """{indicator: {run: {region: value}}}: the area-weighted mean, for the category code the maximum (the most
    threatened status found in the region)."""
    out: dict = {}
    for (indicator, run), group in summary.groupby(["indicator", "run"], sort=False):
        column = "max" if INDICATORS.get(indicator, {}).get("kind") == "categorical" else "mean"
        values = group.set_index("region")[column].round(4)
        out.setdefault(indicator, {})[run] = {r: (None if pd.isna(v) else float(v)) for r, v in values.items()}
    return out


def regions_page(summary: pd.DataFrame, outlines: Path, out_html: str | Path, runs: list[str]) -> Path:
    """Write the choropleth of ``summary`` (``sdm.regions.region_summary``) with a sortable table: choose an
    indicator and a run; the table shows that indicator for every run, one row per region."""
    out_html = Path(out_html)
    assets = copy_assets(out_html.parent / "lib")
    url = {name: relative_url(path, out_html.parent) for name, path in assets.items()}
    values = _value_columns(summary)
    indicators = [name for name in INDICATORS if name in values]
    area = summary.groupby("region", sort=False)["area_km2"].max().round(0)
    config = {
        "values": values, "indicators": [{"name": n, "title": INDICATORS[n]["title"], "units": INDICATORS[n]["units"],
                                          "kind": INDICATORS[n]["kind"],
                                          "palette": PALETTES.get(n) or PALETTES["richness"]} for n in indicators],
        "runs": [r for r in runs if any(r in values[n] for n in indicators)],
        "area": {r: float(a) for r, a in area.items()},
        "categories": list(CATEGORIES), "colours": IUCN_COLOURS, "names": CATEGORY_NAMES,
    }
    page = "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', ERROR_PROBE,
        '<meta name="viewport" content="width=device-width, initial-scale=1">', "<title>Regions</title>",
        f'<link rel="stylesheet" href="{_html.escape(url["leaflet_css"])}">',
        f'<script src="{_html.escape(url["leaflet"])}"></script>',
        f'<script src="{_html.escape(relative_url(outlines, out_html.parent))}"></script>',
        _REGIONS_CSS, "</head><body>",
        '<header><h1>Indicators per region</h1><a href="index.html">All maps and metrics</a>',
        '<label>Indicator <select id="indicator"></select></label>',
        '<label>Run <select id="run"></select></label><span id="units"></span></header>',
        '<div id="map"></div>',
        '<section id="table-wrap"><table id="regions-table" class="sortable"><thead></thead><tbody></tbody>'
        "</table></section>",
        f"<script>var SDM_REGIONS_CFG = {script_json(config)};</script>",
        VIEW_HASH_JS, SORTABLE_JS, _REGIONS_JS, "</body></html>",
    ])
    check_offline_attributes(page, out_html)
    write_atomic(out_html, page)
    return out_html


_REGIONS_CSS = """<style>
  body { margin: 0; font: 13px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; }
  header { padding: 6px 12px; background: #f6f7f9; border-bottom: 1px solid #ccd; }
  header h1 { display: inline; font-size: 17px; margin-right: 14px; } header a { color: #1f5fa8; margin-right: 14px; }
  header label { margin-right: 12px; } #units { color: #555; }
  #map { height: 55vh; background: #dde1e6; }
  #table-wrap { max-height: 38vh; overflow: auto; padding: 0 12px; }
  table { border-collapse: collapse; margin: 6px 0; }
  th, td { border: 1px solid #d5d8de; padding: 2px 6px; }
  th { background: #eef0f4; position: sticky; top: 0; }
  th[aria-sort="ascending"]::after { content: " ▲"; } th[aria-sort="descending"]::after { content: " ▼"; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  .legend { background: rgba(255,255,255,0.9); padding: 4px 6px; border-radius: 4px; font-size: 12px; }
  .legend i { display: inline-block; width: 18px; height: 10px; }
</style>"""

_REGIONS_JS = """<script>
(function () {
  var cfg = SDM_REGIONS_CFG, pick = document.getElementById("indicator"), runPick = document.getElementById("run");
  var map = L.map("map", {zoomSnap: 0.25});
  var layer = null, legend = L.control({position: "bottomright"}), legendDiv = null;
  legend.onAdd = function () { legendDiv = L.DomUtil.create("div", "legend"); return legendDiv; };
  legend.addTo(map);
  function esc(t) { var d = document.createElement("span"); d.textContent = t == null ? "" : String(t); return d.innerHTML; }
  cfg.indicators.forEach(function (i) { pick.add(new Option(i.title, i.name)); });
  function meta() { return cfg.indicators.filter(function (i) { return i.name === pick.value; })[0]; }
  function runsOf(name) { return cfg.runs.filter(function (r) { return cfg.values[name][r]; }); }
  function fillRuns() {
    var keep = runPick.value; runPick.innerHTML = "";
    runsOf(pick.value).forEach(function (r) { runPick.add(new Option(r, r)); });
    if (runsOf(pick.value).indexOf(keep) >= 0) { runPick.value = keep; }
  }
  function range(name) {
    var all = [];
    runsOf(name).forEach(function (r) { Object.values(cfg.values[name][r]).forEach(function (v) { if (v !== null) { all.push(v); } }); });
    var lo = Math.min.apply(null, all.concat([0])), hi = Math.max.apply(null, all.concat([0]));
    if (meta().kind === "diverging") { var m = Math.max(Math.abs(lo), Math.abs(hi)) || 1; return [-m, m]; }
    return [Math.min(lo, 0), hi > lo ? hi : lo + 1];
  }
  function colour(v, m, lo, hi) {
    if (v === null || v === undefined) { return null; }
    if (m.kind === "categorical") { return cfg.colours[cfg.categories[Math.round(v)]] || null; }
    var p = m.palette, t = Math.max(0, Math.min(1, (v - lo) / (hi - lo)));
    return p[Math.min(p.length - 1, Math.floor(t * p.length))];
  }
  function fmt(v, m) {
    if (v === null || v === undefined) { return "–"; }
    if (m.kind === "categorical") { return cfg.categories[Math.round(v)] || String(v); }
    return Number(v).toLocaleString("en", {maximumFractionDigits: 3});
  }
  function draw() {
    var m = meta(), run = runPick.value, values = cfg.values[m.name][run] || {}, r = range(m.name);
    document.getElementById("units").textContent = m.units + (m.kind === "categorical" ?
      " (most threatened in the region)" : " (area-weighted mean)");
    if (layer) { map.removeLayer(layer); }
    layer = L.geoJSON(window.SDM_REGIONS, {
      style: function (f) {
        var c = colour(values[f.properties.region], m, r[0], r[1]);
        return {color: "#333", weight: 0.6, fillColor: c || "#ffffff", fillOpacity: c ? 0.85 : 0.1};
      },
      onEachFeature: function (f, l) { l.bindTooltip(esc(f.properties.region) + ": " + fmt(values[f.properties.region], m)); }
    }).addTo(map);
    legendDiv.innerHTML = "<b>" + esc(m.title) + "</b><br>" + (m.kind === "categorical" ?
      cfg.categories.map(function (c) { return '<i style="background:' + cfg.colours[c] + '"></i> ' + c; }).join("<br>") :
      m.palette.map(function (c) { return '<i style="background:' + c + '"></i>'; }).join("") + "<br>" +
      fmt(r[0], m) + " … " + fmt(r[1], m));
    table(m);
    view.save();
  }
  function table(m) {
    var runs = runsOf(m.name), t = document.getElementById("regions-table");
    var regions = Object.keys(cfg.area).sort();
    t.tHead.innerHTML = "<tr><th>Region</th>" + runs.map(function (r) { return "<th>" + esc(r) + "</th>"; }).join("") +
      "<th>Area with data (km²)</th></tr>";
    t.tBodies[0].innerHTML = regions.map(function (g) {
      return "<tr><td>" + esc(g) + "</td>" + runs.map(function (r) {
        var v = cfg.values[m.name][r][g];
        return '<td class="num" data-value="' + (v === null || v === undefined ? "" : v) + '">' + fmt(v, m) + "</td>";
      }).join("") + '<td class="num">' + Number(cfg.area[g]).toLocaleString("en") + "</td></tr>";
    }).join("");
    sdmSortable(t);
  }
  var view = sdmView(map, "indicator", function () { return pick.value + "|" + runPick.value; }, null);
  fillRuns();
  map.fitBounds(L.geoJSON(window.SDM_REGIONS).getBounds());
  var start = view.restore();
  if (start.key) {
    var parts = start.key.split("|");
    if (cfg.values[parts[0]]) { pick.value = parts[0]; fillRuns(); if (cfg.values[parts[0]][parts[1]]) { runPick.value = parts[1]; } }
  }
  pick.addEventListener("change", function () { fillRuns(); draw(); });
  runPick.addEventListener("change", draw);
  draw();
})();
</script>"""
