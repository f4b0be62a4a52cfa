"""Interactive indicator maps (folium/Leaflet): one self-contained HTML file per indicator, a switchable layer per
run, a legend, and a popup with every layer's value at the clicked cell. The rasters are embedded as PNG data URLs
and the popup values as JSON; Leaflet, jQuery and d3 v3 load from local copies; basemap tiles are the only optional
network resource (``tiles=``)."""

from __future__ import annotations

import html as _html
import re
from pathlib import Path

import folium
from branca.colormap import LinearColormap
from branca.element import Element, JavascriptLink, MacroElement
from folium.template import Template

from sdm.maps.assets import ERROR_PROBE, MAP_CSS, OUTLINE_STYLE, URL, VIEW_HASH_JS, HtmlControl, check_offline, copy_assets, relative_url, \
    script_json, write_atomic
from sdm.maps.display import packed_nulls, popup_grid, read_display_grid
from sdm.maps.styles import CATEGORY_NAMES, DECIMALS, INDICATORS, IUCN_COLOURS, OPACITY, PALETTES, colourise, \
    scale_range
from sdm.redlist import CATEGORIES


def indicator_map(
    layers: dict[str, str | Path],
    indicator: str,
    out_html: str | Path,
    assets_dir: str | Path,
    tiles: str | None = None,
    outlines: str | Path | None = None,
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
    outlines : optional ``lib/regions.js`` (:func:`sdm.maps.regions.write_outlines`): region outlines drawn as a
        thin layer that can be switched off, an offline stand-in for a basemap.
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
    url = {name: relative_url(p, out_html.parent) for name, p in assets.items()}
    meta = INDICATORS[indicator]
    kind = meta["kind"]

    grids = {label: read_display_grid(p) for label, p in paths.items()}
    vmin, vmax, ticks = scale_range(indicator, [g["values"] for g in grids.values()])

    m = folium.Map(tiles=None, control_scale=True, zoom_snap=0.25)
    # Only what this page uses, from local copies; folium's defaults (bootstrap, awesome-markers, font-awesome)
    # are CDN links and unused here.
    m.default_js = [("leaflet", url["leaflet"]), ("jquery", url["jquery"])]
    m.default_css = [("leaflet_css", url["leaflet_css"])]
    root = m.get_root()
    root.header.add_child(Element(ERROR_PROBE), name="js_error_probe", index=1)
    root.header.add_child(Element(MAP_CSS), name="sdm_map_css")
    root.title = f"{meta['title']} ({meta['units']})"

    allowed: set[str] = set()
    if tiles:
        tile_layer = folium.TileLayer(
            tiles, attr=None if "://" not in tiles else "Basemap tiles", name="Basemap", overlay=True, control=True
        )
        tile_layer.add_to(m)
        allowed.add(str(tile_layer.tiles))
        allowed.update(URL.findall(str(tile_layer.options.get("attribution", ""))))

    overlays = {}
    for i, (label, grid) in enumerate(grids.items()):
        overlay = folium.raster_layers.ImageOverlay(
            colourise(grid["values"], indicator, vmin, vmax),
            bounds=grid["bounds"],
            opacity=OPACITY,
            name=label,
            overlay=False,  # base layers: radio buttons, one scenario at a time
            show=i == 0,
            pixelated=True,
        )
        overlay.add_to(m)
        overlays[label] = overlay
    layer_control = folium.LayerControl(position="topright", collapsed=False)
    layer_control.add_to(m)

    if kind == "categorical":
        _category_legend(meta["title"]).add_to(m)
    else:
        caption = meta.get("caption") or f"{meta['title']} ({meta['units']})"
        if len(caption) > 90:  # the title box says the title; the legend must at least say the units
            caption = meta["units"][0].upper() + meta["units"][1:]
        colormap = LinearColormap(PALETTES[indicator], vmin=vmin, vmax=vmax, caption=caption, tick_labels=ticks)
        _localise_d3(colormap, url["d3"])
        # branca draws the caption as one SVG line: make the legend wide enough for it (~7 px a character)
        colormap.width = int(min(680, max(360, 7 * len(caption) + 50)))
        m.add_child(colormap)

    _title_box(meta["title"], meta["units"], len(grids)).add_to(m)
    popup_spec = {
        "kind": kind,
        "decimals": DECIMALS.get(indicator, 2),
        "signed": kind == "diverging",
        "units": meta["units"],
        "labels": [f"{c} – {CATEGORY_NAMES.get(c, c)}" for c in CATEGORIES],
        "layers": [
            {"label": label, "overlay": overlays[label].get_name(), **popup} for label, popup in
            ((label, popup_grid(grid)) for label, grid in grids.items())
        ],
    }
    for layer in popup_spec["layers"]:  # runs of no-data cells packed (unpacked by the popup's script)
        layer["values"] = packed_nulls(layer["values"])
    _ValuePopup(popup_spec).add_to(m)

    south = min(g["bounds"][0][0] for g in grids.values())
    west = min(g["bounds"][0][1] for g in grids.values())
    north = max(g["bounds"][1][0] for g in grids.values())
    east = max(g["bounds"][1][1] for g in grids.values())
    m.fit_bounds([[south, west], [north, east]])
    root.header.add_child(Element(VIEW_HASH_JS), name="sdm_view_hash")
    if outlines:
        root.header.add_child(JavascriptLink(relative_url(Path(outlines), out_html.parent)), name="sdm_outlines")
        _Outlines(layer_control).add_to(m)
    _ViewHash(layer_control, next(iter(grids))).add_to(m)

    page = root.render()
    check_offline(page, allowed, out_html)
    write_atomic(out_html, page)
    return out_html


def _localise_d3(colormap: LinearColormap, d3_url: str) -> None:
    """Make a branca colormap link the local d3 v3 instead of the CDN copy its ``render`` adds to the header."""
    render = colormap.render

    def render_local(**kwargs):
        render(**kwargs)
        colormap.get_root().header.add_child(JavascriptLink(d3_url), name="d3")

    colormap.render = render_local


def _category_legend(title: str) -> HtmlControl:
    rows = "".join(
        f'<div><i style="background:{IUCN_COLOURS[c]}"></i>{c} – {_html.escape(CATEGORY_NAMES.get(c, c))}</div>'
        for c in reversed(CATEGORIES)
    )
    inner = f'<div class="legend-cat"><div class="title">{_html.escape(title)}</div>{rows}</div>'
    return HtmlControl("CategoryLegend", "topright", "legend leaflet-control", inner)


def _title_box(title: str, units: str, n_layers: int) -> HtmlControl:
    how = (
        f"{n_layers} layers: switch in the layer list; click a cell for its value in every layer."
        if n_layers > 1
        else "Click a cell for its value."
    )
    inner = f"<h1>{_html.escape(title)}</h1><p>Units: {_html.escape(units)}.</p><p>{how}</p>"
    return HtmlControl("TitleBox", "bottomleft", "map-title leaflet-control", inner)


class _ValuePopup(MacroElement):
    """Map click -> popup with every layer's value at the clicked EPSG:3857 cell (bold: the layer shown)."""

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        (function (map, spec) {
            spec.layers.forEach(function (l) {  // a string stands for that many no-data cells (packed_nulls)
                var out = [];
                l.values.forEach(function (v) {
                    if (typeof v === "string") { for (var i = +v; i > 0; i--) { out.push(null); } } else { out.push(v); }
                });
                l.values = out;
            });
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
        self.spec_json = script_json(spec)


class _Outlines(MacroElement):
    """The region outlines (``window.SDM_REGIONS``) as a thin overlay, listed in the layer control."""

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        if (window.SDM_REGIONS) {
            {{ this._parent.get_name() }}.createPane("outlines");
            {{ this._parent.get_name() }}.getPane("outlines").style.zIndex = 450;
            {{ this._parent.get_name() }}.getPane("outlines").style.pointerEvents = "none";
            var outlines = L.geoJSON(window.SDM_REGIONS, {{ this.style|tojson }}).addTo({{ this._parent.get_name() }});
            {{ this.control.get_name() }}.addOverlay(outlines, "Region outlines");
        }
        {% endmacro %}
        """
    )

    def __init__(self, control: folium.LayerControl):
        super().__init__()
        self._name = "Outlines"
        self.control = control
        self.style = {"style": OUTLINE_STYLE, "interactive": False, "pane": "outlines"}


class _ViewHash(MacroElement):
    """Keeps the map's base layer, zoom and centre in the URL hash, and opens the view a hash names."""

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        (function (map) {
            var view = sdmView(map, null, null, {{ this.control.get_name() }}_layers.base_layers);
            view.setLayer({{ this.first|tojson }});
            view.restore();
        })({{ this._parent.get_name() }});
        {% endmacro %}
        """
    )

    def __init__(self, control: folium.LayerControl, first: str):
        super().__init__()
        self._name = "ViewHash"
        self.control = control
        self.first = first
