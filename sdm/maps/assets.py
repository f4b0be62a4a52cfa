"""What every page shares: local copies of Leaflet / jQuery / d3 (no network), atomic writes, relative links,
the checks that a page loads nothing from the network, the error probe, JSON for inline scripts, HTML controls and
the view kept in the URL hash."""

from __future__ import annotations

import importlib
import json
import os
import re
import tempfile
from pathlib import Path

from branca.element import MacroElement
from folium.template import Template

OUTLINE_STYLE = {"color": "#333", "weight": 0.6, "opacity": 0.7, "fill": False, "interactive": False}
"""Region outlines on every map: thin, above the rasters, never catching clicks (the click popups stay usable)."""

_ASSET_FILES = {
    # name: (xstatic module, file inside its BASE_DIR, destination under assets_dir)
    "leaflet": ("xstatic.pkg.leaflet", "leaflet.js", "leaflet/leaflet.js"),
    "leaflet_css": ("xstatic.pkg.leaflet", "leaflet.css", "leaflet/leaflet.css"),
    "jquery": ("xstatic.pkg.jquery", "jquery.min.js", "jquery/jquery.min.js"),
    "d3": ("xstatic.pkg.d3", "d3.js", "d3/d3.js"),
}
_LEAFLET_IMAGES = ("layers.png", "layers-2x.png", "marker-icon.png", "marker-icon-2x.png", "marker-shadow.png")

URL = re.compile(r"https?:(?://|\\/\\/)[^\s\"'<>()]+", re.IGNORECASE)  # also JSON-escaped "https:\/\/"
# XML namespace identifiers are names, never fetched.
_NAMESPACE_URL = re.compile(r"^https?://www\.w3\.org/(1999|2000)/", re.IGNORECASE)

# First script in <head>: records JS errors and failed resource loads on <html data-js-errors="...">, so a
# headless browser's dumped DOM shows them (tests/test_browser.py) and a person can see them in the inspector.
ERROR_PROBE = """<script>
(function () {
  function record(msg) {
    var d = document.documentElement;
    d.setAttribute("data-js-errors", (d.getAttribute("data-js-errors") || "") + msg + "\\n");
  }
  window.addEventListener("error", function (e) {
    var t = e.target;
    if (t && t !== window && (t.src || t.href)) { record("failed to load " + (t.src || t.href)); }
    else { record((e.message || "error") + " at " + (e.filename || "?") + ":" + (e.lineno || 0)); }
  }, true);
  window.addEventListener("unhandledrejection", function (e) { record("unhandled rejection: " + e.reason); });
})();
</script>"""

MAP_CSS = """<style>
  html body .leaflet-container { background: #dde1e6; font: 13px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; }
  .legend.leaflet-control { background: rgba(255, 255, 255, 0.9); border-radius: 4px; padding: 4px 6px;
    box-shadow: 0 1px 4px rgba(0, 0, 0, 0.3); }
  .legend .caption { font-size: 12px; font-weight: 600; }
  .legend rect { shape-rendering: crispEdges; }  /* no seams between branca's 500 colour steps */
  .legend-cat { font-size: 12px; }
  .legend-cat .title { font-weight: 600; margin-bottom: 3px; }
  .legend-cat i { display: inline-block; width: 14px; height: 14px; margin-right: 6px; vertical-align: -2px;
    border: 1px solid rgba(0, 0, 0, 0.25); }
  .leaflet-control-layers-base::before { content: "Layer"; display: block; font-weight: 600; margin-bottom: 2px; }
  .map-title { background: rgba(255, 255, 255, 0.9); padding: 6px 10px; border-radius: 4px; max-width: 420px;
    box-shadow: 0 1px 4px rgba(0, 0, 0, 0.3); }
  .map-title h1 { font-size: 15px; margin: 0 0 2px 0; }
  .map-title p { margin: 0; color: #444; font-size: 12px; }
  .map-title a { color: #1f5fa8; }
  .value-popup table { border-collapse: collapse; }
  .value-popup td { padding: 1px 6px; border-bottom: 1px solid #eee; }
  .value-popup td.v { text-align: right; font-variant-numeric: tabular-nums; }
  .value-popup tr.shown td { font-weight: 700; }
  .value-popup .where { color: #666; font-size: 11px; margin-bottom: 3px; }
</style>"""



def copy_assets(assets_dir: str | Path) -> dict[str, Path]:
    """Copy Leaflet (with its control images), jQuery and d3 v3 from the xstatic packages into ``assets_dir``.

    Idempotent and safe to call from parallel jobs: a file is only rewritten when its content differs, through a
    temporary file and an atomic rename. Returns ``{"leaflet", "leaflet_css", "jquery", "d3"} -> path``.
    """
    assets_dir = Path(assets_dir)
    out: dict[str, Path] = {}
    for name, (module, filename, dest) in _ASSET_FILES.items():
        base = Path(importlib.import_module(module).BASE_DIR)
        out[name] = _copy_if_changed(base / filename, assets_dir / dest)
        if name == "leaflet_css":  # leaflet.css refers to images/*.png relative to itself
            for image in _LEAFLET_IMAGES:
                _copy_if_changed(base / "images" / image, out[name].parent / "images" / image)
    return out


def _copy_if_changed(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    if dst.exists() and dst.read_bytes() == data:
        return dst
    write_atomic(dst, data)
    return dst


def write_atomic(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def relative_url(target: Path, start_dir: Path) -> str:
    """A relative URL (forward slashes) from the directory ``start_dir`` to ``target``."""
    return Path(os.path.relpath(Path(target).resolve(), Path(start_dir).resolve())).as_posix()


# ------------------------------------------------------------------------------------------------- rasters


def check_offline(page: str, allowed: set[str], where: Path) -> None:
    """Raise if ``page`` holds an http(s) URL other than the allowed ones (tile template, its attribution): each URL
    must match an allowed one whole, a ``{...}`` placeholder standing for one host or path piece (``a``, ``12``,
    ``@2x`` or the placeholder itself), never for a ``/``, ``?`` or ``#`` that could lead to another host."""
    patterns = [_url_pattern(a) for a in allowed if a]
    bad = sorted(
        {
            u
            for u in URL.findall(page)
            if not _NAMESPACE_URL.match(u) and not any(p.fullmatch(u.replace("\\/", "/")) for p in patterns)
        }
    )
    if bad:
        raise RuntimeError(f"{where}: the map would load from the network: {', '.join(bad[:10])}")


def _url_pattern(template: str) -> re.Pattern:
    """A regex matching ``template`` (a URL, maybe a Leaflet tile template) whole, placeholders as wildcards."""
    return re.compile(
        "".join(r"[\w.@{}-]*" if re.fullmatch(r"\{[^{}]*\}", part) else re.escape(part)
                for part in re.split(r"(\{[^{}]*\})", template)),
        re.IGNORECASE,
    )


class HtmlControl(MacroElement):
    """An ``L.control`` holding static HTML, added to the parent map."""

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        var {{ this.get_name() }} = L.control({position: {{ this.position|tojson }}});
        {{ this.get_name() }}.onAdd = function () {
            var div = L.DomUtil.create("div", {{ this.css_class|tojson }});
            div.innerHTML = {{ this.inner_html|tojson }};
            L.DomEvent.disableClickPropagation(div);
            return div;
        };
        {{ this.get_name() }}.addTo({{ this._parent.get_name() }});
        {% endmacro %}
        """
    )

    def __init__(self, name: str, position: str, css_class: str, inner_html: str):
        super().__init__()
        self._name = name
        self.position = position
        self.css_class = css_class
        self.inner_html = inner_html


def script_json(obj) -> str:
    """JSON safe inside a <script> that folium then compiles as a Jinja template.

    ``<``, ``>``, ``&`` and a ``{`` opening ``{{``, ``{%`` or ``{#`` can only occur inside JSON strings, where their
    ``\\u`` escapes mean the same.
    """
    text = json.dumps(obj, separators=(",", ":"), allow_nan=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return re.sub(r"\{(?=[{%#])", r"\\u007b", text)



def check_offline_attributes(page: str, where: Path) -> None:
    """Raise if the index page would fetch anything (src/href) from the network; text may mention URLs."""
    bad = re.findall(r"""(?:src|href)\s*=\s*["']?(https?://[^"'\s>]+)""", page, flags=re.IGNORECASE)
    if bad:
        raise RuntimeError(f"{where}: the page would load from the network: {', '.join(bad[:10])}")


# The view of a map kept in the URL hash (#layer=...&z=...&lat=...&lon=..., plus an optional page key such as the
# species), so that a view can be shared or cited: sdmView(map, keyName, keyFn, baseLayers) saves on every move and
# base-layer change and returns {save, restore}; restore() applies the hash's zoom, centre and base layer (a name
# in baseLayers) and returns what it read.
VIEW_HASH_JS = """<script>
function sdmView(map, keyName, keyFn, baseLayers) {
  var layerName = null;
  function read() {
    var out = {}, text = window.location.hash.replace(/^#/, "");
    text.split("&").forEach(function (pair) {
      if (!pair) { return; }
      try {  // a link cut short mid-character (%C3) must not stop the page: that pair is skipped
        var i = pair.indexOf("="), k = decodeURIComponent(i < 0 ? pair : pair.slice(0, i));
        out[k] = i < 0 ? "" : decodeURIComponent(pair.slice(i + 1).replace(/\\+/g, " "));
      } catch (e) { return; }
    });
    return out;
  }
  function save() {
    var c = map.getCenter(), parts = [], key = keyFn ? keyFn() : null;
    if (keyName && key) { parts.push(keyName + "=" + encodeURIComponent(key)); }
    if (layerName) { parts.push("layer=" + encodeURIComponent(layerName)); }
    parts.push("z=" + map.getZoom(), "lat=" + c.lat.toFixed(4), "lon=" + c.lng.toFixed(4));
    var hash = "#" + parts.join("&");
    try { window.history.replaceState(null, "", hash); } catch (e) { window.location.hash = hash; }
  }
  function selectBase(name) {
    if (!baseLayers || !baseLayers[name]) { return false; }
    Object.keys(baseLayers).forEach(function (n) {
      if (n !== name && map.hasLayer(baseLayers[n])) { map.removeLayer(baseLayers[n]); }
    });
    if (!map.hasLayer(baseLayers[name])) { map.addLayer(baseLayers[name]); }
    layerName = name;
    return true;
  }
  var initial = read();  // before any move of the page's own set-up rewrites the hash
  map.on("baselayerchange", function (e) { layerName = e.name; save(); });
  map.on("moveend", save);
  return {
    save: save,
    selectBase: selectBase,
    setLayer: function (name) { layerName = name; },
    restore: function () {
      var h = initial, z = parseFloat(h.z), lat = parseFloat(h.lat), lon = parseFloat(h.lon);
      var state = {key: keyName ? h[keyName] : null, layer: h.layer || null, view: false};
      if (isFinite(z) && isFinite(lat) && isFinite(lon)) { map.setView([lat, lon], z, {animate: false}); state.view = true; }
      if (state.layer) { selectBase(state.layer); }
      return state;
    }
  };
}
</script>"""


# Click a column header of a table.sortable to sort its rows (numbers as numbers, blanks last); click again to
# reverse. The header shows the order with an arrow and aria-sort.
SORTABLE_JS = """<script>
function sdmSortable(table) {
  var heads = table.querySelectorAll("thead th");
  heads.forEach(function (th, col) {
    th.style.cursor = "pointer";
    th.addEventListener("click", function () {
      var ascending = th.getAttribute("aria-sort") !== "ascending";
      heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      function key(row) {
        var cell = row.cells[col], text = cell ? (cell.getAttribute("data-value") || cell.textContent).trim() : "";
        var number = parseFloat(text.replace(/,/g, ""));
        return text === "" || text === "–" ? null : (isFinite(number) && /^[-+0-9.,e%\\s]+$/i.test(text) ? number : text);
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null || y === null) { return x === y ? 0 : (x === null ? 1 : -1); }
        var c = (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y));
        return ascending ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
}
document.querySelectorAll("table.sortable").forEach(sdmSortable);
</script>"""
