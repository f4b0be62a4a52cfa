"""Interactive indicator maps (folium/Leaflet) that render with no network, and the ``maps/index.html`` page.

Every map is one self-contained HTML file: the rasters are embedded as PNG data URLs, the values behind the
click popups are embedded as JSON, and Leaflet / jQuery / d3 v3 are loaded from local copies (``copy_assets``)
referenced by relative paths. Basemap tiles are the only optional network resource (``tiles=``).

Rasters are reprojected to Web Mercator (EPSG:3857), the CRS Leaflet draws in, so that an ``L.imageOverlay``
stretched between its latitude/longitude corners lands exactly on its cells.
"""

from __future__ import annotations

import html as _html
import importlib
import json
import math
import os
import re
import tempfile
from pathlib import Path

import folium
import numpy as np
import pandas as pd
import rioxarray
from branca.colormap import LinearColormap
from branca.element import Element, JavascriptLink, MacroElement
from folium.template import Template
from rasterio.enums import Resampling
from rasterio.warp import calculate_default_transform, transform

from sdm.redlist import CATEGORIES, CATEGORY_CODE, LONG_NAMES, THREATENED

_THREATENED_TEXT = ", ".join(sorted(THREATENED, key=CATEGORY_CODE.__getitem__))

INDICATORS: dict[str, dict] = {
    "richness": {
        "title": "Species richness",
        "units": "number of species",
        "kind": "sequential",
    },
    "threatened_count": {
        "title": f"Threatened species ({_THREATENED_TEXT})",
        "units": "number of species",
        "kind": "sequential",
    },
    "threatened_share": {
        "title": f"Share of threatened species ({_THREATENED_TEXT})",
        "units": "proportion of the assemblage, 0-1",
        "kind": "sequential",
    },
    "most_threatened": {
        "title": "Status of the most threatened species",
        "units": "IUCN Red List category; raster code "
        + ", ".join(f"{code} = {cat}" for code, cat in enumerate(CATEGORIES)),
        "kind": "categorical",
    },
    "richness_change": {
        "title": "Change in species richness",
        "units": "number of species, future minus current",
        "kind": "diverging",
    },
    "threatened_count_change": {
        "title": f"Change in threatened species ({_THREATENED_TEXT})",
        "units": "number of species, future minus current",
        "kind": "diverging",
    },
    "threatened_share_change": {
        "title": f"Change in the share of threatened species ({_THREATENED_TEXT})",
        "units": "proportion of the assemblage, future minus current",
        "kind": "diverging",
    },
    "mess": {
        "title": "Extrapolation: similarity to the training climate (MESS)",
        "units": "percent (MESS, Elith et al. 2010): 100 = typical training climate, 0 = at the edge of its range, "
        "< 0 = outside it on at least one variable",
        "kind": "diverging",
        "caption": "MESS: < 0 = climate outside the training range",
        "range": (-100.0, 100.0),
        "layers": "scenario",
    },
}
"""Indicator name -> ``title``, ``units`` (what one raster value means) and colour-scale ``kind``
(``sequential``, ``diverging`` centred on 0, or ``categorical`` with the ordinal codes of ``redlist.CATEGORIES``);
optionally ``caption`` (the legend's text instead of title and units), ``range`` (a fixed colour scale (min, max):
values beyond it take the end colours; the popups show them as they are) and ``layers: "scenario"`` (a property of
the climate, not of the assemblage: one layer per scenario instead of one per run, as every dispersal assumption
of a scenario shares it)."""

IUCN_COLOURS: dict[str, str] = {"LC": "#60C659", "NT": "#CCE226", "VU": "#F9E814", "EN": "#FC7F3F", "CR": "#D81E05"}
"""Official IUCN Red List category colours."""
if set(IUCN_COLOURS) != set(CATEGORIES):
    raise ImportError(f"sdm.maps.IUCN_COLOURS {sorted(IUCN_COLOURS)} do not match sdm.redlist.CATEGORIES {CATEGORIES}")

CATEGORY_NAMES: dict[str, str] = {
    code: name.title() for name, code in LONG_NAMES.items() if "/" not in name and code in CATEGORIES
}
"""Category code -> display name ("EN" -> "Endangered"), derived from ``redlist.LONG_NAMES``."""

# Colour stops (low -> high). Viridis for richness; ColorBrewer YlOrRd for threat; RdBu for change, oriented so
# that red always means "worse" (fewer species, more threatened species).
_VIRIDIS = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b",
            "#fde725"]
_YLORRD = ["#ffffcc", "#ffeda0", "#fed976", "#feb24c", "#fd8d3c", "#fc4e2a", "#e31a1c", "#bd0026", "#800026"]
_RDBU = ["#67001f", "#b2182b", "#d6604d", "#f4a582", "#fddbc7", "#f7f7f7", "#d1e5f0", "#92c5de", "#4393c3",
         "#2166ac", "#053061"]
_PALETTES = {
    "richness": _VIRIDIS,
    "threatened_count": _YLORRD,
    "threatened_share": _YLORRD,
    "richness_change": _RDBU,
    "threatened_count_change": _RDBU[::-1],
    "threatened_share_change": _RDBU[::-1],
    "mess": _RDBU,  # red: outside the training climate, blue: well inside it
}
_DECIMALS = {"threatened_share": 3, "threatened_share_change": 3, "mess": 1}  # popup rounding; counts get 2

DISPLAY_MAX_PX = 2048
"""Longest side, in pixels, of a layer's PNG; larger rasters are shown at a coarser resolution."""
POPUP_MAX_VALUES = 250_000
"""Most values per layer embedded for the click popup; the display grid is subsampled above that."""
OPACITY = 0.9

_ASSET_FILES = {
    # name: (xstatic module, file inside its BASE_DIR, destination under assets_dir)
    "leaflet": ("xstatic.pkg.leaflet", "leaflet.js", "leaflet/leaflet.js"),
    "leaflet_css": ("xstatic.pkg.leaflet", "leaflet.css", "leaflet/leaflet.css"),
    "jquery": ("xstatic.pkg.jquery", "jquery.min.js", "jquery/jquery.min.js"),
    "d3": ("xstatic.pkg.d3", "d3.js", "d3/d3.js"),
}
_LEAFLET_IMAGES = ("layers.png", "layers-2x.png", "marker-icon.png", "marker-icon-2x.png", "marker-shadow.png")

_URL = re.compile(r"https?:(?://|\\/\\/)[^\s\"'<>()]+", re.IGNORECASE)  # also JSON-escaped "https:\/\/"
# XML namespace identifiers are names, never fetched.
_NAMESPACE_URL = re.compile(r"^https?://www\.w3\.org/(1999|2000)/", re.IGNORECASE)

# First script in <head>: records JS errors and failed resource loads on <html data-js-errors="...">, so a
# headless browser's dumped DOM shows them (tests/test_browser.py) and a person can see them in the inspector.
_ERROR_PROBE = """<script>
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

_MAP_CSS = """<style>
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


# --------------------------------------------------------------------------------------------------- assets


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
    _write_atomic(dst, data)
    return dst


def _write_atomic(path: Path, data: bytes | str) -> None:
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


def _relative_url(target: Path, start_dir: Path) -> str:
    """A relative URL (forward slashes) from the directory ``start_dir`` to ``target``."""
    return Path(os.path.relpath(Path(target).resolve(), Path(start_dir).resolve())).as_posix()


# ------------------------------------------------------------------------------------------------- rasters


def _read_display_grid(path: Path) -> dict:
    """A single-band GeoTIFF reprojected to EPSG:3857 (nearest neighbour, NaN outside data).

    Returns ``values`` (float32 ``(y, x)``), ``x0``/``y0`` (top-left corner, metres), ``dx``/``dy`` (cell size,
    metres, both positive) and ``bounds`` (``[[south, west], [north, east]]``, degrees).
    """
    with rioxarray.open_rasterio(path, masked=True) as src:
        da = src.load()
    if "band" in da.dims:
        if da.sizes["band"] != 1:
            raise ValueError(f"{path}: expected a single-band GeoTIFF, found {da.sizes['band']} bands")
        da = da.squeeze("band", drop=True)
    if da.rio.crs is None:
        raise ValueError(f"{path}: GeoTIFF has no CRS")
    da = da.astype("float32")

    if da.rio.crs.is_geographic:  # Web Mercator is undefined at the poles
        left, bottom, right, top = da.rio.bounds()
        if bottom < -85.0 or top > 85.0:
            da = da.rio.clip_box(left, max(bottom, -85.0), right, min(top, 85.0))

    height, width = da.rio.height, da.rio.width
    _, dst_w, dst_h = calculate_default_transform(da.rio.crs, "EPSG:3857", width, height, *da.rio.bounds())
    scale = min(1.0, DISPLAY_MAX_PX / max(dst_w, dst_h))
    shape = (max(1, round(dst_h * scale)), max(1, round(dst_w * scale)))
    merc = da.rio.reproject("EPSG:3857", shape=shape, resampling=Resampling.nearest, nodata=np.nan)

    t = merc.rio.transform()
    x0, y0, dx, dy = t.c, t.f, t.a, -t.e
    x1, y1 = x0 + dx * merc.rio.width, y0 - dy * merc.rio.height
    lons, lats = transform("EPSG:3857", "EPSG:4326", [x0, x1], [y1, y0])
    return {
        "values": np.asarray(merc.values, dtype="float32"),
        "x0": float(x0),
        "y0": float(y0),
        "dx": float(dx),
        "dy": float(dy),
        "bounds": [[float(lats[0]), float(lons[0])], [float(lats[1]), float(lons[1])]],
    }


def _nice_step(span: float, n: int = 5) -> float:
    raw = span / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)


def _scale_range(indicator: str, grids: list[np.ndarray]) -> tuple[float, float, list[float]]:
    """(vmin, vmax, tick values) of the colour scale shared by all layers of one map."""
    finite = np.concatenate([g[np.isfinite(g)].ravel() for g in grids]) if grids else np.array([])
    kind = INDICATORS[indicator]["kind"]
    if "range" in INDICATORS[indicator]:  # fixed, so that maps of different runs read the same
        vmin, vmax = (float(v) for v in INDICATORS[indicator]["range"])
        step = _nice_step(vmax - vmin, 4)
    elif kind == "diverging":
        # 99th percentile so that a few extreme cells do not wash out the rest; beyond it the end colours saturate
        top = float(np.percentile(np.abs(finite), 99)) if finite.size else 0.0
        step = _nice_step(top, 3) if top > 0 else 1.0
        vmax = step * math.ceil(top / step) if top > 0 else 1.0
        vmin = -vmax
    else:
        top = float(finite.max()) if finite.size else 0.0
        vmin = 0.0
        step = _nice_step(top, 5) if top > 0 else 1.0
        vmax = step * math.ceil(top / step) if top > 0 else 1.0
        if indicator == "threatened_share":
            vmax = min(vmax, 1.0)
            step = _nice_step(vmax, 5)
    ticks = [round(float(v), 10) for v in np.arange(vmin, vmax + step / 2, step)]
    return vmin, vmax, ticks


def _colourise(values: np.ndarray, indicator: str, vmin: float, vmax: float) -> np.ndarray:
    """RGBA uint8 ``(y, x, 4)`` image of ``values``; NaN (and unknown categories) fully transparent."""
    rgba = np.zeros(values.shape + (4,), dtype=np.uint8)
    finite = np.isfinite(values)
    if INDICATORS[indicator]["kind"] == "categorical":
        codes = np.where(finite, np.rint(np.where(finite, values, -1)), -1).astype(int)
        for code, cat in enumerate(CATEGORIES):
            rgba[codes == code] = (*_hex_rgb(IUCN_COLOURS[cat]), 255)
        return rgba
    stops = np.array([_hex_rgb(c) for c in _PALETTES[indicator]], dtype=float)
    pos = np.linspace(0.0, 1.0, len(stops))
    t = np.clip((np.where(finite, values, vmin) - vmin) / (vmax - vmin), 0.0, 1.0)
    for ch in range(3):
        rgba[..., ch] = np.rint(np.interp(t, pos, stops[:, ch])).astype(np.uint8)
    rgba[..., 3] = np.where(finite, 255, 0)
    return rgba


def _hex_rgb(colour: str) -> tuple[int, int, int]:
    c = colour.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def _popup_grid(grid: dict) -> dict:
    """The display grid subsampled (block centres) to at most ``POPUP_MAX_VALUES`` values, as JSON-ready dict."""
    values = grid["values"]
    h, w = values.shape
    k = max(1, math.ceil(math.sqrt(h * w / POPUP_MAX_VALUES)))
    while math.ceil(h / k) * math.ceil(w / k) > POPUP_MAX_VALUES:
        k += 1
    rows = np.minimum(np.arange(0, h, k) + k // 2, h - 1)
    cols = np.minimum(np.arange(0, w, k) + k // 2, w - 1)
    sub = values[np.ix_(rows, cols)]
    flat = []
    for v in sub.ravel().tolist():
        if v != v or v in (math.inf, -math.inf):
            flat.append(None)
        else:
            r = round(v, 4)
            flat.append(int(r) if r == int(r) else r)
    return {
        "x0": grid["x0"],
        "y0": grid["y0"],
        "dx": grid["dx"] * k,
        "dy": grid["dy"] * k,
        "nx": int(len(cols)),
        "ny": int(len(rows)),
        "values": flat,
    }


# -------------------------------------------------------------------------------------------------- the map


def indicator_map(
    layers: dict[str, str | Path],
    indicator: str,
    out_html: str | Path,
    assets_dir: str | Path,
    tiles: str | None = None,
) -> Path:
    """Write one interactive map of ``indicator`` with one switchable layer per scenario.

    Parameters
    ----------
    layers : layer label (e.g. ``"current_none"``, ``"ssp126_2070_full"``) -> single-band GeoTIFF of the
        indicator (any CRS with a definition; nodata or NaN = no data). The first entry is shown on opening.
    indicator : a key of ``INDICATORS``; sets the title, the units in the legend and the colour scale, which is
        shared by all layers so that they are comparable.
    out_html : the HTML file to write.
    assets_dir : where the Leaflet / jQuery / d3 files are copied (``copy_assets``); referenced relatively.
    tiles : optional basemap, a Leaflet tile URL template or an xyzservices provider name; the only network
        resource the page may use. ``None`` draws the data on a plain background.

    Clicking the map opens a popup with the value of every layer at that cell (values are those drawn, on the
    EPSG:3857 display grid, subsampled to at most ``POPUP_MAX_VALUES`` per layer). Raises ``ValueError`` for an
    unknown indicator or no layers, ``FileNotFoundError`` for a missing GeoTIFF, and ``RuntimeError`` if the
    rendered page would load anything from the network other than ``tiles``. Layer labels must not contain
    ``{{``, ``{%`` or ``{#`` (folium passes its output through Jinja twice).
    """
    if indicator not in INDICATORS:
        raise ValueError(f"unknown indicator {indicator!r}; expected one of {', '.join(INDICATORS)}")
    if not layers:
        raise ValueError(f"indicator_map({indicator!r}): no layers given")
    paths = {str(label): Path(p) for label, p in layers.items()}
    for label in paths:
        if re.search(r"\{[{%#]", label):  # folium renders its output through Jinja a second time
            raise ValueError(f"layer label {label!r} contains '{{{{', '{{%' or '{{#', which folium cannot show")
    for label, p in paths.items():
        if not p.is_file():
            raise FileNotFoundError(f"GeoTIFF for layer {label!r} of {indicator!r} not found: {p}")

    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    assets = copy_assets(assets_dir)
    url = {name: _relative_url(p, out_html.parent) for name, p in assets.items()}
    meta = INDICATORS[indicator]
    kind = meta["kind"]

    grids = {label: _read_display_grid(p) for label, p in paths.items()}
    vmin, vmax, ticks = _scale_range(indicator, [g["values"] for g in grids.values()])

    m = folium.Map(tiles=None, control_scale=True, zoom_snap=0.25)
    # Only what this page uses, from local copies; folium's defaults (bootstrap, awesome-markers, font-awesome)
    # are CDN links and unused here.
    m.default_js = [("leaflet", url["leaflet"]), ("jquery", url["jquery"])]
    m.default_css = [("leaflet_css", url["leaflet_css"])]
    root = m.get_root()
    root.header.add_child(Element(_ERROR_PROBE), name="js_error_probe", index=1)
    root.header.add_child(Element(_MAP_CSS), name="sdm_map_css")
    root.title = f"{meta['title']} ({meta['units']})"

    allowed: set[str] = set()
    if tiles:
        tile_layer = folium.TileLayer(
            tiles, attr=None if "://" not in tiles else "Basemap tiles", name="Basemap", overlay=True, control=True
        )
        tile_layer.add_to(m)
        allowed.add(str(tile_layer.tiles))
        allowed.update(_URL.findall(str(tile_layer.options.get("attribution", ""))))

    overlays = {}
    for i, (label, grid) in enumerate(grids.items()):
        overlay = folium.raster_layers.ImageOverlay(
            _colourise(grid["values"], indicator, vmin, vmax),
            bounds=grid["bounds"],
            opacity=OPACITY,
            name=label,
            overlay=False,  # base layers: radio buttons, one scenario at a time
            show=i == 0,
            pixelated=True,
        )
        overlay.add_to(m)
        overlays[label] = overlay
    folium.LayerControl(position="topright", collapsed=False).add_to(m)

    if kind == "categorical":
        _category_legend(meta["title"]).add_to(m)
    else:
        caption = meta.get("caption") or f"{meta['title']} ({meta['units']})"
        if len(caption) > 90:  # the title box says the title; the legend must at least say the units
            caption = meta["units"][0].upper() + meta["units"][1:]
        colormap = LinearColormap(_PALETTES[indicator], vmin=vmin, vmax=vmax, caption=caption, tick_labels=ticks)
        _localise_d3(colormap, url["d3"])
        # branca draws the caption as one SVG line: make the legend wide enough for it (~7 px a character)
        colormap.width = int(min(680, max(360, 7 * len(caption) + 50)))
        m.add_child(colormap)

    _title_box(meta["title"], meta["units"], len(grids)).add_to(m)
    popup_spec = {
        "kind": kind,
        "decimals": _DECIMALS.get(indicator, 2),
        "signed": kind == "diverging",
        "units": meta["units"],
        "labels": [f"{c} – {CATEGORY_NAMES.get(c, c)}" for c in CATEGORIES],
        "layers": [
            {"label": label, "overlay": overlays[label].get_name(), **_popup_grid(grid)}
            for label, grid in grids.items()
        ],
    }
    _ValuePopup(popup_spec).add_to(m)

    south = min(g["bounds"][0][0] for g in grids.values())
    west = min(g["bounds"][0][1] for g in grids.values())
    north = max(g["bounds"][1][0] for g in grids.values())
    east = max(g["bounds"][1][1] for g in grids.values())
    m.fit_bounds([[south, west], [north, east]])

    page = root.render()
    _check_offline(page, allowed, out_html)
    _write_atomic(out_html, page)
    return out_html


def _localise_d3(colormap: LinearColormap, d3_url: str) -> None:
    """Make a branca colormap link the local d3 v3 instead of the CDN copy its ``render`` adds to the header."""
    render = colormap.render

    def render_local(**kwargs):
        render(**kwargs)
        colormap.get_root().header.add_child(JavascriptLink(d3_url), name="d3")

    colormap.render = render_local


def _check_offline(page: str, allowed: set[str], where: Path) -> None:
    """Raise if ``page`` holds an http(s) URL other than the allowed ones (tile template, its attribution)."""
    allowed_prefixes = [a.split("{", 1)[0] for a in allowed if a]
    bad = sorted(
        {
            u
            for u in _URL.findall(page)
            if not _NAMESPACE_URL.match(u) and not any(u.startswith(p) or p.startswith(u) for p in allowed_prefixes)
        }
    )
    if bad:
        raise RuntimeError(f"{where}: the map would load from the network: {', '.join(bad[:10])}")


class _HtmlControl(MacroElement):
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


def _category_legend(title: str) -> _HtmlControl:
    rows = "".join(
        f'<div><i style="background:{IUCN_COLOURS[c]}"></i>{c} – {_html.escape(CATEGORY_NAMES.get(c, c))}</div>'
        for c in reversed(CATEGORIES)
    )
    inner = f'<div class="legend-cat"><div class="title">{_html.escape(title)}</div>{rows}</div>'
    return _HtmlControl("CategoryLegend", "topright", "legend leaflet-control", inner)


def _title_box(title: str, units: str, n_layers: int) -> _HtmlControl:
    how = (
        f"{n_layers} layers: switch in the layer list; click a cell for its value in every layer."
        if n_layers > 1
        else "Click a cell for its value."
    )
    inner = f"<h1>{_html.escape(title)}</h1><p>Units: {_html.escape(units)}.</p><p>{how}</p>"
    return _HtmlControl("TitleBox", "bottomleft", "map-title leaflet-control", inner)


class _ValuePopup(MacroElement):
    """Map click -> popup with every layer's value at the clicked EPSG:3857 cell (bold: the layer shown)."""

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        (function (map, spec) {
            function fmt(v) {
                if (v === null || v === undefined) { return "no data"; }
                if (spec.kind === "categorical") {
                    var code = Math.round(v);
                    return (code >= 0 && code < spec.labels.length) ? spec.labels[code] : String(v);
                }
                var s = String(Number(v.toFixed(spec.decimals)));
                return (spec.signed && v > 0) ? "+" + s : s;
            }
            function esc(text) { return $("<span>").text(text).html(); }
            map.on("click", function (e) {
                var p = L.CRS.EPSG3857.project(e.latlng);
                var rows = spec.layers.map(function (l) {
                    var c = Math.floor((p.x - l.x0) / l.dx), r = Math.floor((l.y0 - p.y) / l.dy);
                    var v = (c >= 0 && c < l.nx && r >= 0 && r < l.ny) ? l.values[r * l.nx + c] : null;
                    var layer = window[l.overlay];
                    var shown = layer && map.hasLayer(layer);
                    return "<tr" + (shown ? " class=\\"shown\\"" : "") + "><td>" + esc(l.label) +
                        "</td><td class=\\"v\\">" + esc(fmt(v)) + "</td></tr>";
                });
                var where = e.latlng.lat.toFixed(4) + "°, " + e.latlng.lng.toFixed(4) + "°";
                L.popup({maxWidth: 420})
                    .setLatLng(e.latlng)
                    .setContent("<div class=\\"value-popup\\"><div class=\\"where\\">" + where + " · " +
                                esc(spec.units) + "</div><table>" + rows.join("") + "</table></div>")
                    .openOn(map);
            });
        })({{ this._parent.get_name() }}, {{ this.spec_json }});
        {% endmacro %}
        """
    )

    def __init__(self, spec: dict):
        super().__init__()
        self._name = "ValuePopup"
        self.spec_json = _script_json(spec)


def _script_json(obj) -> str:
    """JSON safe inside a <script> that folium then compiles as a Jinja template.

    ``<``, ``>``, ``&`` and a ``{`` opening ``{{``, ``{%`` or ``{#`` can only occur inside JSON strings, where their
    ``\\u`` escapes mean the same.
    """
    text = json.dumps(obj, separators=(",", ":"), allow_nan=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return re.sub(r"\{(?=[{%#])", r"\\u007b", text)


# ------------------------------------------------------------------------------------------------ the index


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


def index_page(
    maps: dict[str, str | Path],
    metrics: dict,
    out_html: str | Path,
    species_table: pd.DataFrame | None = None,
) -> Path:
    """Write ``maps/index.html``: links to every map, the run's metrics and an optional species table.

    Parameters
    ----------
    maps : link text -> HTML file; linked relatively to ``out_html`` (the files need not exist yet).
    metrics : nested dict rendered as headed sections and tables: a dict of scalars becomes a two-column table;
        a dict of dicts of scalars becomes one table with a row per outer key and a column per inner key (e.g.
        ``{"SDM test AUC": {"deep": {"auc": 0.91}, "baseline": {"auc": 0.84}}}``); deeper dicts become
        sub-sections; lists of dicts become tables; other lists are comma-joined. Floats are shown to 4
        significant digits.
    out_html : the file to write.
    species_table : optional table of statuses; cells holding a category code of ``redlist.CATEGORIES`` are
        coloured with the IUCN colours and a text box filters the rows. A long table with one row per species x
        run (``sdm.status.status_table``: ``species``, ``scenario``, [``dispersal``], ``status`` or ``category``,
        [``redlist_category``]) is shown as species x run (plus the Red List column), with the full table
        under a collapsed "All columns"; any other table is shown as it is.
    """
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    esc = _html.escape

    links = "\n".join(
        f'<li><a href="{esc(_relative_url(Path(p), out_html.parent))}">{esc(str(label))}</a></li>'
        for label, p in maps.items()
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        _ERROR_PROBE,
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>Extinction-risk indicator maps</title>",
        _INDEX_CSS,
        "</head><body><main>",
        "<h1>Extinction-risk indicator maps</h1>",
        '<section id="maps"><h2>Maps</h2>',
        "<p>Each map holds every scenario as a layer; click a cell for its values. The maps work offline.</p>",
        f'<ul class="maps">{links}</ul>' if maps else "<p>No maps.</p>",
        "</section>",
        '<section id="metrics"><h2>Metrics</h2>',
        _metrics_html(_plain(metrics), level=3) if metrics else "<p>No metrics.</p>",
        "</section>",
    ]
    if species_table is not None:
        parts += ['<section id="species"><h2>Species</h2>', _species_section(species_table), "</section>"]
    parts += ["</main>", _INDEX_JS, "</body></html>"]
    page = "\n".join(parts)
    _check_offline_attributes(page, out_html)
    _write_atomic(out_html, page)
    return out_html


_INDEX_CSS = """<style>
  body { font: 14px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 0;
    background: #f6f7f9; }
  main { max-width: 1100px; margin: 0 auto; padding: 16px 24px 48px; }
  h1 { font-size: 22px; } h2 { font-size: 18px; border-bottom: 1px solid #ccd; padding-bottom: 3px; }
  h3 { font-size: 15px; margin-bottom: 4px; } h4, h5, h6 { font-size: 14px; margin-bottom: 4px; }
  #metrics .group .group { margin-left: 4px; padding-left: 14px; border-left: 3px solid #dde1e8; }
  ul.maps { padding-left: 18px; } ul.maps li { margin: 2px 0; } ul.maps a { color: #1f5fa8; }
  table { border-collapse: collapse; background: #fff; margin: 4px 0 12px; }
  th, td { border: 1px solid #d5d8de; padding: 3px 8px; text-align: left; vertical-align: top; }
  th { background: #eef0f4; font-weight: 600; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  td.cat { text-align: center; font-weight: 600; }
  input.filter { margin: 4px 0; padding: 3px 6px; width: 280px; }
  .species-wrap { max-height: 70vh; overflow: auto; }
  .species-wrap th { position: sticky; top: 0; }
  details { margin-top: 8px; } summary { cursor: pointer; color: #1f5fa8; }
</style>"""

_INDEX_JS = """<script>
(function () {
  var box = document.getElementById("species-filter");
  if (!box) { return; }
  box.addEventListener("input", function () {
    var q = box.value.toLowerCase();
    document.querySelectorAll("#species-table tbody tr").forEach(function (tr) {
      tr.style.display = tr.textContent.toLowerCase().indexOf(q) >= 0 ? "" : "none";
    });
  });
})();
</script>"""


def _plain(obj):
    """Metrics as plain Python: numpy scalars/arrays, Series and DataFrames (records) to scalars, lists, dicts."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, pd.DataFrame):
        return [_plain(r) for r in obj.reset_index().to_dict(orient="records")]
    if isinstance(obj, pd.Series):
        return _plain(obj.to_dict())
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_plain(v) for v in (obj.tolist() if isinstance(obj, np.ndarray) else obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _fmt(value) -> tuple[str, str]:
    """(escaped text, css class) of one metric value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–", "num"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)), ""
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}", "num"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}", "num"
    if isinstance(value, (list, tuple)) and all(not isinstance(v, (dict, list, tuple)) for v in value):
        return _html.escape(", ".join(_fmt_plain(v) for v in value)), ""
    text = str(value)
    if text in IUCN_COLOURS:
        return _html.escape(text), "cat"
    return _html.escape(text), ""


def _fmt_plain(value) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    return str(value)


def _is_scalar(value) -> bool:
    return not isinstance(value, (dict, list, tuple)) or (
        isinstance(value, (list, tuple)) and all(not isinstance(v, (dict, list, tuple)) for v in value)
    )


def _cell(value) -> str:
    text, cls = _fmt(value)
    style = f' style="background:{IUCN_COLOURS[text]}"' if cls == "cat" else ""
    return f'<td class="{cls}"{style}>{text}</td>' if cls else f"<td>{text}</td>"


def _metrics_html(metrics: dict, level: int) -> str:
    esc = _html.escape
    h = f"h{min(level, 6)}"
    scalars = {k: v for k, v in metrics.items() if _is_scalar(v)}
    out = []
    if scalars:
        rows = "".join(f"<tr><th>{esc(str(k))}</th>{_cell(v)}</tr>" for k, v in scalars.items())
        out.append(f"<table>{rows}</table>")
    for key, value in metrics.items():
        if key in scalars:
            continue
        out.append(f'<div class="group"><{h}>{esc(str(key))}</{h}>')
        if isinstance(value, dict) and value and all(
            isinstance(v, dict) and v and all(_is_scalar(x) for x in v.values()) for v in value.values()
        ):
            out.append(_matrix_html(value))
        elif isinstance(value, dict):
            out.append(_metrics_html(value, level + 1))
        elif all(isinstance(v, dict) for v in value):  # list of records
            out.append(_matrix_html({i + 1: v for i, v in enumerate(value)}))
        else:
            out.append("<ul>" + "".join(f"<li>{_fmt(v)[0]}</li>" for v in value) + "</ul>")
        out.append("</div>")
    return "\n".join(out)


def _matrix_html(rows: dict) -> str:
    """dict of dicts of scalars -> one table, a row per outer key, a column per (ordered) inner key."""
    esc = _html.escape
    columns: list = []
    for inner in rows.values():
        columns += [c for c in inner if c not in columns]
    head = "<tr><th></th>" + "".join(f"<th>{esc(str(c))}</th>" for c in columns) + "</tr>"
    body = "".join(
        f"<tr><th>{esc(str(r))}</th>" + "".join(_cell(inner.get(c)) for c in columns) + "</tr>"
        for r, inner in rows.items()
    )
    return f"<table><thead>{head}</thead><tbody>{body}</tbody></table>"


def _species_section(table: pd.DataFrame) -> str:
    value = next((c for c in ("status", "category") if c in table.columns), None)
    if not {"species", "scenario"} <= set(table.columns) or value is None:
        return _species_html(table)
    long = table.assign(
        run=table["scenario"].astype(str) + ("_" + table["dispersal"].astype(str) if "dispersal" in table else "")
    ).drop_duplicates(["species", "run"])
    wide = long.pivot(index="species", columns="run", values=value)
    wide = wide.loc[long["species"].drop_duplicates(), long["run"].drop_duplicates()]
    wide.columns.name = None
    if "redlist_category" in long.columns:
        redlist = long.groupby("species", sort=False)["redlist_category"].first()
        wide.insert(0, "Red List", redlist.reindex(wide.index).replace("", None))
    return (
        f"<p>{_html.escape(value).capitalize()} per species and run.</p>" + _species_html(wide)
        + f"<details><summary>All columns ({len(table)} rows)</summary>"
        + _species_html(table, filter_box=False) + "</details>"
    )


def _species_html(table: pd.DataFrame, filter_box: bool = True) -> str:
    esc = _html.escape
    df = table.reset_index() if not isinstance(table.index, pd.RangeIndex) else table
    head = "".join(f"<th>{esc(str(c))}</th>" for c in df.columns)
    body = "".join(
        "<tr>" + "".join(_cell(None if _isna(v) else v) for v in row) + "</tr>"
        for row in df.itertuples(index=False, name=None)
    )
    if not filter_box:
        return f'<div class="species-wrap"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
    return (
        f'<input class="filter" id="species-filter" type="search" placeholder="Filter {len(df)} rows…">'
        f'<div class="species-wrap"><table id="species-table"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def _isna(value) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _check_offline_attributes(page: str, where: Path) -> None:
    """Raise if the index page would fetch anything (src/href) from the network; text may mention URLs."""
    bad = re.findall(r"""(?:src|href)\s*=\s*["']?(https?://[^"'\s>]+)""", page, flags=re.IGNORECASE)
    if bad:
        raise RuntimeError(f"{where}: the page would load from the network: {', '.join(bad[:10])}")


def run_metrics(sdm_metrics: dict, ingest_report: dict, iucn_metrics: dict | None = None) -> dict:
    """The metrics shown on the index page: a headline summary first, then the details without bulky lists.

    The SDM's per-epoch history and thresholds and the list of species lost in cleaning stay in the JSON files.
    """
    test = sdm_metrics.get("test", {})
    deep, baseline = test.get("deep_sdm", {}), test.get("baseline", {})
    summary = {
        "Deep SDM held-out mean AUC": deep.get("mean_auc"),
        "Deep SDM held-out mean TSS": deep.get("mean_tss"),
    }
    if baseline:
        summary[f"Baseline ({baseline.get('name')}) held-out mean AUC"] = baseline.get("mean_auc")
        summary[f"Baseline ({baseline.get('name')}) held-out mean TSS"] = baseline.get("mean_tss")
    summary["Records read / kept"] = f"{ingest_report['records_read']} / {ingest_report['records_kept']}"
    if iucn_metrics:
        summary["Red List status, 5-class CV accuracy"] = iucn_metrics.get("accuracy")
        summary["Red List status, binary (threatened) CV accuracy"] = iucn_metrics.get("binary_accuracy")
        summary["Red List status, balanced CV accuracy"] = iucn_metrics.get("balanced_accuracy")
    per_species = {
        s: {"deep SDM AUC": v.get("auc"), "baseline AUC": baseline.get("per_species", {}).get(s, {}).get("auc"),
            "held-out records": v.get("test_records")}
        for s, v in deep.get("per_species", {}).items()
    }
    details = {k: v for k, v in sdm_metrics.items() if k not in ("history", "thresholds", "test")}
    metrics = {
        "Summary": summary,
        "Species distribution model": details,
        "Held-out AUC per species (spatial blocks)": per_species,
        "Occurrence cleaning": {k: v for k, v in ingest_report.items() if k != "species_lost"},
    }
    if iucn_metrics:
        metrics["Red List classifier (cross-validation)"] = iucn_metrics
    return metrics
