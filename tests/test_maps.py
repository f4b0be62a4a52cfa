"""Offline indicator maps and the index page (sdm.maps): structure of the HTML, local assets, no network URLs."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr

from sdm import maps
from sdm.maps import assets, display, styles
from sdm.redlist import CATEGORIES

H, W = 30, 40


def write_tif(path: Path, data: np.ndarray, crs: str, x0: float, y0: float, res: float) -> Path:
    """A single-band float32 GeoTIFF, top-left corner (x0, y0), square cells of ``res`` CRS units, NaN nodata."""
    h, w = data.shape
    da = xr.DataArray(
        data.astype("float32"),
        dims=("y", "x"),
        coords={"y": y0 - res * (np.arange(h) + 0.5), "x": x0 + res * (np.arange(w) + 0.5)},
    )
    da = da.rio.write_crs(crs).rio.write_nodata(np.nan)
    path.parent.mkdir(parents=True, exist_ok=True)
    da.rio.to_raster(path)
    return path


def _field(seed: int, scale: float = 20.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    v = np.round(scale * np.exp(-((xx - 20) ** 2 + (yy - 15) ** 2) / 200.0) + rng.integers(0, 3, (H, W)))
    v[:3, :5] = np.nan  # a corner without data
    return v


def layers_3035(root: Path, name: str, data: dict[str, np.ndarray]) -> dict[str, Path]:
    """EPSG:3035, 1 km cells over central Europe."""
    return {
        label: write_tif(root / "indicators" / label / f"{name}.tif", arr, "EPSG:3035", 4_200_000, 2_900_000, 1000)
        for label, arr in data.items()
    }


class _Refs(HTMLParser):
    """Collects src/href attribute values."""

    def __init__(self):
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]


def local_refs(html: str) -> list[str]:
    parser = _Refs()
    parser.feed(html)
    return [r for r in parser.refs if not r.startswith(("data:", "#"))]


def assert_offline(html_path: Path) -> None:
    html = html_path.read_text()
    refs = local_refs(html)
    assert refs, "expected local asset references"
    for ref in refs:
        assert not re.match(r"^[a-z]+:", ref), ref  # relative, no scheme
        assert (html_path.parent / ref).is_file(), f"{ref} referenced by {html_path.name} does not exist"
    assert not re.search(r"https?://", html), re.findall(r"https?://\S{0,60}", html)


@pytest.fixture
def richness_layers(tmp_path):
    return layers_3035(
        tmp_path,
        "richness",
        {"current_none": _field(0), "ssp126_2070_full": _field(1, 15), "ssp126_2070_none": _field(2, 10)},
    )


def test_indicator_map_has_one_overlay_per_layer_legend_and_is_offline(tmp_path, richness_layers):
    mdir = tmp_path / "maps"
    out = maps.indicator_map(richness_layers, "richness", mdir / "richness.html", mdir / "lib")
    assert out == mdir / "richness.html" and out.is_file()
    html = out.read_text()
    assert html.count("L.imageOverlay(") == 3
    for label in richness_layers:
        assert json.dumps(label) in html
    assert "Species richness (number of species)" in html  # legend caption with units
    assert "L.control.layers(" in html
    assert html.count("data:image/png;base64,") == 3
    assert_offline(out)
    # Leaflet, jQuery, d3 v3, the Leaflet CSS: nothing else (no bootstrap / awesome-markers)
    assert sorted(local_refs(html)) == sorted(
        ["lib/leaflet/leaflet.js", "lib/leaflet/leaflet.css", "lib/jquery/jquery.min.js", "lib/d3/d3.js"]
    )
    assert "d3.scale.threshold" in html and "data-js-errors" in html


def test_assets_relative_to_a_map_in_another_directory(tmp_path, richness_layers):
    out = maps.indicator_map(richness_layers, "richness", tmp_path / "maps" / "sub" / "r.html", tmp_path / "lib")
    assert "../../lib/leaflet/leaflet.js" in out.read_text()
    assert_offline(out)


def test_categorical_legend_lists_categories_with_iucn_colours(tmp_path):
    codes = np.clip(np.round(_field(3) / 5), 0, 4)
    lay = layers_3035(tmp_path, "most_threatened", {"current_none": codes, "future": np.clip(codes + 1, 0, 4)})
    out = maps.indicator_map(lay, "most_threatened", tmp_path / "maps" / "most_threatened.html", tmp_path / "lib")
    html = out.read_text()
    legend = re.search(r"legend-cat.*?</div></div>", html.replace("\\u003c", "<").replace("\\u003e", ">"))
    assert legend, "categorical legend not found"
    text = legend.group(0)
    assert [c for c in CATEGORIES if c in text] == list(CATEGORIES)
    for cat in CATEGORIES:
        assert maps.IUCN_COLOURS[cat] in text
    assert "Endangered" in text and "Least Concern" in text
    assert "d3.scale" not in html  # no colour bar for categories
    assert_offline(out)


def test_geographic_input_and_bounds(tmp_path):
    data = np.arange(H * W, dtype=float).reshape(H, W)
    tif = write_tif(tmp_path / "ind" / "current_none" / "richness.tif", data, "EPSG:4326", 5.0, 48.0, 0.1)
    out = maps.indicator_map({"current": tif}, "richness", tmp_path / "m.html", tmp_path / "lib")
    bounds = json.loads(re.search(r"L\.imageOverlay\(\s*\"[^\"]*\",\s*(\[\[.*?\]\])", out.read_text()).group(1))
    (south, west), (north, east) = bounds
    assert south == pytest.approx(45.0, abs=0.05) and north == pytest.approx(48.0, abs=0.05)
    assert west == pytest.approx(5.0, abs=0.05) and east == pytest.approx(9.0, abs=0.05)
    assert_offline(out)


def test_popup_values_are_embedded_and_downsampled(tmp_path, monkeypatch):
    monkeypatch.setattr(display, "POPUP_MAX_VALUES", 100)
    data = _field(4)
    lay = layers_3035(tmp_path, "threatened_share", {"a": np.clip(data / 30, 0, 1), "b": np.clip(data / 40, 0, 1)})
    html = maps.indicator_map(lay, "threatened_share", tmp_path / "s.html", tmp_path / "lib").read_text()
    spec = json.loads(re.search(r"\}\)\(map_[0-9a-f]+, (\{.*?\})\);\n", html).group(1))
    assert [layer["label"] for layer in spec["layers"]] == ["a", "b"]
    for layer in spec["layers"]:
        values = display.unpacked_nulls(layer["values"])
        assert len(values) == layer["nx"] * layer["ny"] <= 100
        assert None in values  # the no-data corner
        assert all(v is None or 0 <= v <= 1 for v in values)
        assert len(layer["values"]) < len(values)  # its runs of no data written as one entry each


def test_popup_grid_block_centres(monkeypatch):
    values = np.arange(100 * 60, dtype="float32").reshape(100, 60)
    values[0, 0] = np.nan
    grid = {"values": values, "x0": 0.0, "y0": 0.0, "dx": 10.0, "dy": 10.0}
    assert len(display.popup_grid(grid)["values"]) == values.size  # small enough: every cell
    monkeypatch.setattr(display, "POPUP_MAX_VALUES", 1500)
    p = display.popup_grid(grid)
    # k = ceil(sqrt(6000 / 1500)) = 2: block (r, c) holds the cell (2r + 1, 2c + 1)
    assert (p["nx"], p["ny"], p["dx"], p["dy"]) == (30, 50, 20.0, 20.0)
    assert p["values"][3 * 30 + 4] == (2 * 3 + 1) * 60 + (2 * 4 + 1)
    assert display.popup_grid({**grid, "values": values[:2, :2]})["values"][0] is None


def test_colour_scales():
    vmin, vmax, ticks = styles.scale_range("richness_change", [np.array([-3.0, 1.0, np.nan, 7.0])])
    assert vmin == -vmax and vmax >= 3 and 0.0 in ticks
    vmin, vmax, ticks = styles.scale_range("threatened_share", [np.array([0.0, 0.93])])
    assert (vmin, vmax) == (0.0, 1.0) and ticks[0] == 0.0 and ticks[-1] == 1.0
    vmin, vmax, _ = styles.scale_range("richness", [np.full(4, np.nan)])  # no data at all
    assert vmax > vmin
    rgba = styles.colourise(np.array([[np.nan, 0.0, 5.0]]), "richness", 0.0, 5.0)
    assert rgba[0, 0, 3] == 0 and rgba[0, 1, 3] == 255 and rgba[0, 2, 3] == 255
    cats = styles.colourise(np.array([[0.0, 4.0, np.nan]]), "most_threatened", 0.0, 4.0)
    assert tuple(cats[0, 0, :3]) == styles.hex_rgb(maps.IUCN_COLOURS["LC"])
    assert tuple(cats[0, 1, :3]) == styles.hex_rgb(maps.IUCN_COLOURS["CR"])
    assert cats[0, 2, 3] == 0


def test_indicators_table_is_complete():
    from sdm.ensembles import ensemble_layer_names
    from sdm.indicators import layer_names

    # every layer the workflow writes has a map style: indicators, ensemble agreement, the protection gap
    assert set(maps.INDICATORS) == set(layer_names(True, True)) | set(ensemble_layer_names(True)) | {
        "threatened_unprotected"}
    for name, meta in maps.INDICATORS.items():
        assert meta["title"] and meta["units"]
        assert meta["kind"] in ("sequential", "diverging", "categorical")
        assert (meta["kind"] == "diverging") == (name.endswith("_change") or name == "mess")


def test_unknown_indicator_raises_naming_it(tmp_path, richness_layers):
    with pytest.raises(ValueError, match="richnes_typo"):
        maps.indicator_map(richness_layers, "richnes_typo", tmp_path / "x.html", tmp_path / "lib")


def test_missing_geotiff_raises_naming_the_file(tmp_path, richness_layers):
    missing = tmp_path / "indicators" / "ssp585_2070_full" / "richness.tif"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        maps.indicator_map({**richness_layers, "ssp585": missing}, "richness", tmp_path / "x.html", tmp_path / "lib")
    assert not (tmp_path / "x.html").exists()


def test_user_tiles_are_the_only_url_allowed(tmp_path, richness_layers):
    tiles = "https://tiles.example.org/{z}/{x}/{y}.png"
    out = maps.indicator_map(richness_layers, "richness", tmp_path / "t.html", tmp_path / "lib", tiles=tiles)
    html = out.read_text()
    assert tiles in html
    assert {u for u in re.findall(r"https?://[^\s\"']+", html)} == {tiles}


def test_network_url_in_page_raises():
    with pytest.raises(RuntimeError, match="cdn.example.com"):
        assets.check_offline('<script src="https://cdn.example.com/x.js"></script>', set(), Path("m.html"))
    assets.check_offline('<svg xmlns="http://www.w3.org/2000/svg"></svg>', set(), Path("m.html"))


def test_tile_template_placeholders_let_no_other_url_through():
    """A template with ``{s}`` allows its own tiles, never a CDN script (the text before ``{`` was ``https://``)."""
    tiles = "https://{s}.tile.openstreetmap.org/{z}/{x}/{y}{r}.png"
    page = f'L.tileLayer("{tiles}"); L.tileLayer("https://a.tile.openstreetmap.org/3/4/2@2x.png")'
    for url in ["https://cdn.jsdelivr.net/npm/leaflet@1.9.3/dist/leaflet.js",
                "https://evil.example/x#.tile.openstreetmap.org/1/2/3.png", "https://tile.openstreetmap.org.evil/1.png"]:
        with pytest.raises(RuntimeError, match=re.escape(url)):
            assets.check_offline(f'{page}<script src="{url}"></script>', {tiles}, Path("m.html"))
    assets.check_offline(page, {tiles}, Path("m.html"))
    assets.check_offline(page.replace("/", "\\/"), {tiles}, Path("m.html"))  # JSON-escaped


def test_copy_assets_is_idempotent(tmp_path):
    assets = maps.copy_assets(tmp_path / "lib")
    assert set(assets) == {"leaflet", "leaflet_css", "jquery", "d3"}
    assert all(p.is_file() and p.stat().st_size > 1000 for p in assets.values())
    assert (assets["leaflet_css"].parent / "images" / "layers.png").is_file()
    assert re.search(r'version: "3\.', assets["d3"].read_text())  # branca's legend needs d3 v3
    mtimes = {k: p.stat().st_mtime_ns for k, p in assets.items()}
    again = maps.copy_assets(tmp_path / "lib")
    assert {k: p.stat().st_mtime_ns for k, p in again.items()} == mtimes


def test_index_page_links_metrics_and_species(tmp_path, richness_layers):
    mdir = tmp_path / "results" / "maps"
    r = maps.indicator_map(richness_layers, "richness", mdir / "richness.html", mdir / "lib")
    codes = np.clip(np.round(_field(5) / 5), 0, 4)
    lay = layers_3035(tmp_path, "most_threatened", {"current_none": codes})
    m = maps.indicator_map(lay, "most_threatened", mdir / "scenario" / "most_threatened.html", mdir / "lib")
    metrics = {
        "SDM test AUC": {"deep": {"auc": 0.912345, "n_species": 12}, "baseline": {"auc": 0.8412, "n_species": 12}},
        "IUCN status classifier": {"cv_accuracy": 0.71, "folds": 5},
        "run": {"cells": 120000, "scenarios": ["current", "ssp126_2070"], "nested": {"a": {"b": {"c": 1}}}},
    }
    species = pd.DataFrame(
        {"current": ["LC", "VU", None], "ssp126_2070_full": ["NT", "CR", "EN"]},
        index=pd.Index(["Bufo bufo", "Rana arvalis", "Emys <orbicularis>"], name="species"),
    )
    out = maps.index_page({"Species richness": r, "Most threatened": m}, metrics, mdir / "index.html", species)
    html = out.read_text()
    hrefs = local_refs(html)
    assert hrefs == ["richness.html", "scenario/most_threatened.html"]
    for h in hrefs:
        assert (out.parent / h).is_file()
    assert "0.9123" in html and "0.8412" in html and "<th>auc</th>" in html and "<th>deep</th>" in html
    assert "cv_accuracy" in html and "120,000" in html and "current, ssp126_2070" in html
    assert "Bufo bufo" in html and "Emys &lt;orbicularis&gt;" in html
    assert f"background:{maps.IUCN_COLOURS['CR']}" in html
    assert not re.search(r"https?://", html)


def test_index_page_without_species_or_metrics(tmp_path):
    out = maps.index_page({}, {}, tmp_path / "index.html")
    html = out.read_text()
    assert "No maps" in html and "No metrics" in html and 'id="species"' not in html


def test_odd_layer_labels_cannot_break_the_page(tmp_path):
    label = "ssp<126></script>&{x}"
    tif = write_tif(tmp_path / "a.tif", _field(6), "EPSG:3035", 4_200_000, 2_900_000, 1000)
    with pytest.raises(ValueError, match="cannot show"):
        maps.indicator_map({"{{x}}": tif}, "richness", tmp_path / "m.html", tmp_path / "lib")
    html = maps.indicator_map({label: tif}, "richness", tmp_path / "m.html", tmp_path / "lib").read_text()
    assert html.count("</script>") == html.count("<script")
    spec = json.loads(re.search(r"\}\)\(map_[0-9a-f]+, (\{.*?\})\);\n", html).group(1))
    assert spec["layers"][0]["label"] == label
    assert json.dumps(label).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026") in html
    assert json.loads(assets.script_json({"a": "{%x%}{#y#}<>&"})) == {"a": "{%x%}{#y#}<>&"}


def test_index_metrics_accept_numpy_and_frames(tmp_path):
    metrics = {
        "AUC": {"deep": {"auc": np.float32(0.9)}, "baseline": {"auc": np.float64(0.8)}},
        "per species": pd.DataFrame({"species": ["A a", "B b"], "auc": [0.7, np.nan]}),
        "thresholds": np.array([0.1, 0.5]),
    }
    html = maps.index_page({}, metrics, tmp_path / "index.html").read_text()
    assert "<th>species</th>" in html and "A a" in html and "0.7" in html and "0.1, 0.5" in html
    assert "0.9" in html and "0.8" in html


def test_render_maps_draws_every_given_layer_and_refuses_a_missing_one(tmp_path):
    ind = tmp_path / "results" / "indicators"
    runs = ["current_none", "ssp126_2070_full"]
    for run in runs:
        write_tif(ind / run / "richness.tif", _field(7), "EPSG:3035", 4_200_000, 2_900_000, 1000)
    write_tif(ind / runs[1] / "richness_change.tif", _field(8) - 5, "EPSG:3035", 4_200_000, 2_900_000, 1000)
    layers = maps.layers_from_paths([ind / runs[1] / "richness_change.tif", ind / runs[1] / "richness.tif",
                                     ind / runs[0] / "richness.tif"], runs)
    assert list(layers["richness"]) == runs  # in the order of the runs
    out = maps.render_maps(layers, tmp_path / "results" / "maps", {"SDM": {"auc": 0.9}})
    assert set(out) == {"richness", "richness_change", "index"}
    assert out["index"] == tmp_path / "results" / "maps" / "index.html"
    assert out["richness"].read_text().count("L.imageOverlay(") == 2
    assert out["richness_change"].read_text().count("L.imageOverlay(") == 1
    assert local_refs(out["index"].read_text()) == ["richness.html", "richness_change.html"]
    assert_offline(out["richness"])
    layers["threatened_count"] = {runs[0]: ind / runs[0] / "threatened_count.tif"}
    with pytest.raises(FileNotFoundError, match="threatened_count.tif"):
        maps.render_maps(layers, tmp_path / "maps2", {})
    with pytest.raises(ValueError, match="no map style for indicator"):
        maps.render_maps({"richnes": {}}, tmp_path / "maps3", {})


def test_index_pivots_a_long_status_table(tmp_path):
    rows = []
    for scenario, dispersal, cats in [("current", "none", ["LC", "VU"]), ("ssp126_2070", "full", ["NT", "CR"])]:
        for species, cat, rl in zip(["Bufo bufo", "Rana arvalis"], cats, ["LC", ""]):
            rows.append({"species": species, "scenario": scenario, "dispersal": dispersal, "status": cat,
                         "redlist_category": rl, "p_LC": 0.25})
    html = maps.index_page({}, {}, tmp_path / "index.html", pd.DataFrame(rows)).read_text()
    wide = re.search(r'<table id="species-table">.*?</table>', html).group(0)
    assert re.findall(r"<th>([^<]*)</th>", wide) == ["species", "Red List", "current_none", "ssp126_2070_full"]
    assert re.findall(r"<tr>(.*?)</tr>", wide)[2].count("<td") == 4  # Rana arvalis: no Red List, 2 runs
    assert ">CR</td>" in wide and "p_LC" not in wide
    assert "<summary>All columns (4 rows)</summary>" in html and "p_LC" in html


def test_mess_map_has_a_layer_per_scenario_a_fixed_scale_and_its_legend(tmp_path):
    ind = tmp_path / "results" / "indicators"
    runs = ["current_none", "ssp585_2070_full", "ssp585_2070_none"]
    for run in runs:
        write_tif(ind / run / "richness.tif", _field(7), "EPSG:3035", 4_200_000, 2_900_000, 1000)
    mess = {"current_none": 100 - 4 * _field(9), "ssp585_2070_full": 40 - 10 * _field(10)}
    mess["ssp585_2070_none"] = mess["ssp585_2070_full"]  # the indicators stage writes one per run
    for run, values in mess.items():
        write_tif(ind / run / "mess.tif", values, "EPSG:3035", 4_200_000, 2_900_000, 1000)
    paths = [ind / run / f"{name}.tif" for run in runs for name in ("richness", "mess")]
    out = maps.render_maps(maps.layers_from_paths(paths, runs), tmp_path / "results" / "maps", {})
    html = out["mess"].read_text()
    assert html.count("L.imageOverlay(") == 2  # current and ssp585_2070, not one per dispersal
    spec = json.loads(re.search(r"\}\)\(map_[0-9a-f]+, (\{.*?\})\);\n", html).group(1))
    assert [layer["label"] for layer in spec["layers"]] == ["current", "ssp585_2070"]
    assert min(v for v in display.unpacked_nulls(spec["layers"][1]["values"]) if v is not None) < -100  # as they are
    assert '.text("MESS: \\u003c 0 = climate outside the training range")' in html  # the legend (JS-escaped "<")
    assert "mess.html" in local_refs(out["index"].read_text())
    assert_offline(out["mess"])
    vmin, vmax, ticks = styles.scale_range("mess", [mess["ssp585_2070_full"]])
    assert (vmin, vmax) == (-100.0, 100.0) and ticks == [-100.0, -50.0, 0.0, 50.0, 100.0]
    rgba = styles.colourise(np.array([[-500.0, 0.0, 100.0]]), "mess", vmin, vmax)
    assert tuple(rgba[0, 0, :3]) == styles.hex_rgb(styles.PALETTES["mess"][0])  # beyond the scale: its end colour


def test_a_large_layer_is_read_decimated_for_its_picture(tmp_path):
    """A layer larger than twice the picture's side is read at a coarser resolution (nearest), never whole; a small
    one cell for cell. Values, NaN and georeferencing survive."""
    import rasterio
    from rasterio.transform import from_origin

    from sdm.maps.display import _read_for_display

    rows, cols = np.mgrid[0:1200, 0:3000]
    values = (rows // 100 * 100 + cols // 100).astype("float32")  # constant on 100 x 100 tiles
    values[:100] = np.nan
    path = tmp_path / "big.tif"
    with rasterio.open(path, "w", driver="GTiff", height=1200, width=3000, count=1, dtype="float32", nodata=np.nan,
                       crs="EPSG:4326", transform=from_origin(-30.0, 10.0, 0.01, 0.01)) as dst:
        dst.write(values, 1)
    small = _read_for_display(path, 2000)
    assert small.shape == (1200, 3000)
    np.testing.assert_array_equal(small.values, values)
    big = _read_for_display(path, 300)  # at most 600 cells a side: every 5th cell
    assert big.shape == (240, 600) and big.rio.crs.to_epsg() == 4326
    assert big.rio.bounds() == pytest.approx((-30.0, -2.0, 0.0, 10.0))
    assert np.isnan(big.values[:20]).all() and not np.isnan(big.values[20:]).any()
    centre = big.sel(x=-30.0 + 0.01 * 2050, y=10.0 - 0.01 * 650, method="nearest")
    assert float(centre) == 6 * 100 + 20  # the tile holding that point


def test_packed_no_data_runs_unpack_to_the_values():
    values = [None, None, None, 1.5, None, 0, None, None, -2, None, None]
    packed = display.packed_nulls(values)
    assert packed == ["3", 1.5, None, 0, "2", -2, "2"]
    assert display.unpacked_nulls(packed) == values
