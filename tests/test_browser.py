"""The maps in a real browser: headless Chromium opens them from file:// with networking disabled.

JS errors and failed loads are recorded by the page itself on ``<html data-js-errors>`` (see sdm.maps), so the
dumped DOM shows them. Screenshots go to ``$SDM_SCREENSHOT_DIR`` when set (for a person to look at).
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr

from sdm import maps

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("/usr/bin/chromium not installed (apt-get install chromium)", allow_module_level=True)

H, W = 30, 40


def write_tif(path: Path, data: np.ndarray, crs: str, x0: float, y0: float, res: float) -> Path:
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


def chromium(tmp_path: Path, page: Path, *args: str, fragment: str = "") -> str:
    """Run headless Chromium on ``page`` (``#fragment`` appended) with all network access refused; returns
    stdout."""
    cmd = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
        "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",  # no DNS, a dead proxy
        f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=5000", *args,
        page.resolve().as_uri() + (f"#{fragment}" if fragment else ""),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def dump_dom(tmp_path: Path, page: Path, fragment: str = "") -> str:
    dom = chromium(tmp_path, page, "--dump-dom", fragment=fragment)
    assert "<html" in dom, "Chromium returned no DOM"
    return dom


def js_errors(dom: str) -> str:
    m = re.search(r'data-js-errors="([^"]*)"', dom)
    return m.group(1) if m else ""


def screenshot(tmp_path: Path, page: Path, name: str, fragment: str = "") -> Path:
    png = tmp_path / f"{name}.png"
    chromium(tmp_path, page, f"--screenshot={png}", "--window-size=1280,800", "--hide-scrollbars", fragment=fragment)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("SDM_SCREENSHOT_DIR"):
        Path(os.environ["SDM_SCREENSHOT_DIR"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, Path(os.environ["SDM_SCREENSHOT_DIR"]) / png.name)
    return png


def with_script(page: Path, script: str) -> Path:
    """A copy of ``page`` next to it (same relative assets) running ``script`` after load; ``MAP`` is the map."""
    html = page.read_text()
    map_name = re.search(r"var (map_[0-9a-f]+) = L\.map\(", html).group(1)
    script = script.replace("MAP", map_name)
    probe = page.with_name(f"_probe_{page.name}")
    probe.write_text(html.replace("</html>", f"<script>window.addEventListener('load', function () {{{script}}});"
                                              "</script>\n</html>"))
    return probe


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Indicator GeoTIFFs (EPSG:4326 and EPSG:3035), two maps and the index, under results/."""
    root = tmp_path_factory.mktemp("site")
    # cell (r, c) holds r * 100 + c, so a popup value tells which cell was looked up
    ids = np.arange(H)[:, None] * 100.0 + np.arange(W)[None, :]
    ids[:2, :] = np.nan
    rich = {
        "current_none": write_tif(root / "ind" / "current_none" / "richness.tif", ids, "EPSG:4326", 5.0, 48.0, 0.1),
        "ssp126_2070_full": write_tif(
            root / "ind" / "ssp126_2070_full" / "richness.tif", ids + 10_000, "EPSG:4326", 5.0, 48.0, 0.1
        ),
    }
    yy, xx = np.mgrid[0:H, 0:W]
    codes = np.where((xx - 20) ** 2 + (yy - 15) ** 2 < 200, np.minimum(xx // 8, 4), np.nan).astype(float)
    cat = {
        "current_none": write_tif(
            root / "ind" / "current_none" / "most_threatened.tif", codes, "EPSG:3035", 4_200_000, 2_900_000, 1000
        )
    }
    mdir = root / "results" / "maps"
    r = maps.indicator_map(rich, "richness", mdir / "richness.html", mdir / "lib")
    c = maps.indicator_map(cat, "most_threatened", mdir / "most_threatened.html", mdir / "lib")
    index = maps.index_page(
        {"Species richness": r, "Most threatened status": c},
        {"SDM test AUC": {"deep": {"auc": 0.91}, "baseline": {"auc": 0.84}}, "IUCN classifier": {"cv_accuracy": 0.7}},
        mdir / "index.html",
    )
    return {"root": root, "richness": r, "most_threatened": c, "index": index}


def test_indicator_map_renders_offline(site, tmp_path):
    dom = dump_dom(tmp_path, site["richness"])
    assert js_errors(dom) == ""
    assert 'class="folium-map leaflet-container' in dom or "leaflet-container" in dom
    assert re.search(r'<img[^>]*class="leaflet-image-layer', dom), "no image overlay"
    assert len(re.findall(r'<img[^>]*class="leaflet-image-layer', dom)) == 1  # one scenario shown at a time
    assert 'id="legend"' in dom and "Species richness (number of species)" in dom
    assert dom.count('class="leaflet-control-layers-selector"') == 2  # the two scenarios in the layer control
    screenshot(tmp_path, site["richness"], "richness")


def test_categorical_map_renders_offline(site, tmp_path):
    dom = dump_dom(tmp_path, site["most_threatened"])
    assert js_errors(dom) == ""
    assert "leaflet-container" in dom and 'class="leaflet-image-layer' in dom
    assert "CR – Critically Endangered" in dom and "LC – Least Concern" in dom
    screenshot(tmp_path, site["most_threatened"], "most_threatened")


def test_click_popup_shows_every_layer_value(site, tmp_path):
    # centre of cell (row 10, col 20): lon 5 + 0.1 * 20.5, lat 48 - 0.1 * 10.5
    probe = with_script(
        site["richness"],
        "MAP.fire('click', {latlng: L.latLng(46.95, 7.05)});"
        "document.querySelectorAll('.leaflet-control-layers-base input')[1].click();"
        "MAP.fire('click', {latlng: L.latLng(46.95, 7.05)});",
    )
    dom = dump_dom(tmp_path, probe)
    assert js_errors(dom) == ""
    popup = re.search(r'<div class="value-popup">.*?</table></div>', dom).group(0)
    rows = re.findall(r'<tr( class="shown")?><td>([^<]*)</td><td class="v">([^<]*)</td></tr>', popup)
    # after switching to the second layer, it is the one in bold
    assert rows == [("", "current_none", "1020"), (' class="shown"', "ssp126_2070_full", "11020")]
    screenshot(tmp_path, probe, "richness_popup")


def test_index_renders_and_links_exist(site, tmp_path):
    dom = dump_dom(tmp_path, site["index"])
    assert js_errors(dom) == ""
    hrefs = re.findall(r'<a href="([^"]+)"', dom)
    assert hrefs == ["richness.html", "most_threatened.html"]
    assert all((site["index"].parent / h).is_file() for h in hrefs)
    assert "0.91" in dom and "cv_accuracy" in dom
    screenshot(tmp_path, site["index"], "index")


def test_error_probe_reports_a_missing_asset(site, tmp_path):
    """The no-error assertions above are meaningful: a broken page is reported."""
    page = site["richness"]
    broken = page.with_name("_broken.html")
    broken.write_text(page.read_text().replace("lib/leaflet/leaflet.js", "lib/leaflet/missing.js"))
    errors = js_errors(dump_dom(tmp_path, broken))
    assert "missing.js" in errors and "L is not defined" in errors


def test_indicator_map_opens_the_view_its_url_names(site, tmp_path):
    probe = with_script(site["richness"], "document.documentElement.setAttribute('data-view', "
                                          "MAP.getZoom() + '|' + location.hash);")
    dom = dump_dom(tmp_path, probe, fragment="layer=ssp126_2070_full&z=9&lat=46.6&lon=6.9")
    assert js_errors(dom) == ""
    view = re.search(r'data-view="([^"]*)"', dom).group(1)
    assert view.startswith("9|#layer=ssp126_2070_full&amp;z=9&amp;lat=46.6")
    assert 'alt=""' in dom or "leaflet-image-layer" in dom


# ------------------------------------------------------------------------------------ the planner's pages


def planner_site(root: Path) -> dict:
    """A species explorer (two modelled species and one with records only), a regions page and a protection
    table, written by sdm.maps from small known inputs."""
    from sdm.maps.explorer import species_explorer
    from sdm.maps.protection import protection_page
    from sdm.maps.regions import regions_page, write_outlines

    species = ["Ophrys apifera", "Orchis mascula"]
    y = 48.0 - 0.1 * (np.arange(H) + 0.5)
    x = 5.0 + 0.1 * (np.arange(W) + 0.5)
    yy, xx = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    suitability = np.stack([np.clip(1 - xx / W, 0, 1), np.clip(yy / H, 0, 1)]).astype("float32")
    present = suitability > 0.5
    warm = np.stack([xx > W / 2, yy > H / 2])  # Ophrys moves east

    def dataset(presence):
        return xr.Dataset({"suitability": (("species", "y", "x"), suitability),
                           "presence": (("species", "y", "x"), presence)},
                          coords={"species": species, "y": y, "x": x}).rio.write_crs("EPSG:4326")

    records = pd.DataFrame({"species": ["Ophrys apifera"] * 3 + ["Rara avis"] * 2,
                            "longitude": [5.5, 5.6, 5.7, 7.0, 7.1], "latitude": [47.5, 47.4, 47.3, 46.5, 46.4]})
    rows = []
    for name, redlist, predicted in (("Ophrys apifera", "VU", "EN"), ("Orchis mascula", "LC", "LC"),
                                     ("Rara avis", None, "CR")):
        for scenario, dispersal in (("current", "none"), ("warm", "full")):
            rows.append({"species": name, "scenario": scenario, "dispersal": dispersal, "status": predicted,
                         "category_classifier": predicted, "redlist_category": redlist, "category_b": "EN",
                         "p_LC": 0.1, "p_NT": 0.1, "p_VU": 0.2, "p_EN": 0.5, "p_CR": 0.1,
                         "range_km2": 1000.0 if scenario == "current" else 400.0,
                         "range_loss": 0.0 if scenario == "current" else 0.6,
                         "category_a3": None if scenario == "current" else "EN"})
    maps_dir = root / "maps"
    regions = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"region": name},
         "geometry": {"type": "Polygon", "coordinates": [[[x0, 45.0], [x0 + 2, 45.0], [x0 + 2, 48.0], [x0, 48.0],
                                                          [x0, 45.0]]]}}
        for name, x0 in (("Alpha", 5.0), ("Beta", 7.0))]}
    outlines = write_outlines(regions, maps_dir / "lib")
    explorer = species_explorer({"current": dataset(present), "warm": dataset(warm)}, ["current_none", "warm_full"],
                                records, pd.DataFrame(rows), maps_dir, min_records=5, outlines=outlines)
    summary = pd.DataFrame({"region": ["Alpha", "Beta", "Alpha", "Beta"], "run": ["current_none"] * 2 + ["warm_full"] * 2,
                            "indicator": ["richness"] * 4, "mean": [1.5, 12.0, 3.0, 0.5], "min": 0.0, "max": 20.0,
                            "area_km2": [5000.0, 6000.0, 5000.0, 6000.0]})
    regions_html = regions_page(summary, outlines, maps_dir / "regions.html", ["current_none", "warm_full"])
    table = pd.DataFrame({"species": ["Ophrys apifera", "Rara avis"], "status_now": ["EN", "CR"],
                          "threatened_runs": [2, 2], "range_km2_now": [1000.0, None],
                          "protected_share_current_none": [0.05, 0.6], "protected_share_warm_full": [0.2, None]})
    protection = protection_page(table, maps_dir / "protection.html")
    return {"explorer": explorer, "regions": regions_html, "protection": protection}


@pytest.fixture(scope="module")
def planner(tmp_path_factory):
    return planner_site(tmp_path_factory.mktemp("planner"))


def page_with_script(page: Path, script: str) -> Path:
    """A copy of ``page`` beside it running ``script`` 300 ms after load (data scripts have arrived by then)."""
    probe = page.with_name(f"_probe_{page.name}")
    probe.write_text(page.read_text().replace(
        "</body>", f"<script>window.addEventListener('load', function () {{ setTimeout(function () {{{script}}}, 300); }});"
                   "</script></body>"))
    return probe


TYPE_A_NAME = """
var box = document.getElementById("search");
box.value = "ophrys API";
box.dispatchEvent(new Event("input"));
box.dispatchEvent(new KeyboardEvent("keydown", {key: "Enter"}));
"""


def test_explorer_typing_a_name_shows_the_species(planner, tmp_path):
    probe = page_with_script(planner["explorer"], TYPE_A_NAME + """
setTimeout(function () {
  var img = document.querySelector("img.species-layer");
  var overlays = document.querySelector(".leaflet-control-layers-overlays").textContent;
  document.documentElement.setAttribute("data-shown", (img ? img.src.slice(0, 22) : "none") + "|" + overlays);
}, 300);""")
    dom = dump_dom(tmp_path, probe)
    assert js_errors(dom) == ""
    assert 'data-species="Ophrys apifera"' in dom
    assert re.search(r'<li data-name="Ophrys apifera" class="active">', dom)  # case-insensitive partial match
    predicted = re.search(r'<td id="predicted">(.*?)</td>', dom).group(1)
    assert ">EN<" in predicted
    assert "Red List category</th><td><span class=\"cat\" style=\"background:#F9E814\"" in dom  # VU, IUCN yellow
    shown = re.search(r'data-shown="([^"]*)"', dom).group(1)
    assert shown.startswith("data:image/png;base64,|") and "Records (3 places)" in shown and "Region outlines" in shown
    assert "Range area across runs" in dom and 'id="range-chart"' in dom
    screenshot(tmp_path, planner["explorer"], "explorer", fragment="species=Ophrys%20apifera")


def test_explorer_future_layer_changes_the_image_and_the_url(planner, tmp_path):
    probe = page_with_script(planner["explorer"], TYPE_A_NAME + """
setTimeout(function () {
  var before = document.querySelector("img.species-layer").src;
  var labels = Array.prototype.slice.call(document.querySelectorAll(".leaflet-control-layers-base label"));
  labels.filter(function (l) { return l.textContent.indexOf("warm_full") >= 0; })[0].querySelector("input").click();
  setTimeout(function () {
    var after = document.querySelectorAll("img.species-layer");
    document.documentElement.setAttribute("data-switch", (after.length === 1 && after[0].src !== before) + "|" +
      location.hash);
  }, 100);
}, 300);""")
    dom = dump_dom(tmp_path, probe)
    assert js_errors(dom) == ""
    switched = re.search(r'data-switch="([^"]*)"', dom).group(1)
    assert switched.startswith("true|#species=Ophrys%20apifera&amp;layer=Presence%20warm_full&amp;z=")


def test_explorer_opens_the_species_in_the_url_even_without_a_model(planner, tmp_path):
    dom = dump_dom(tmp_path, planner["explorer"], fragment="species=Rara%20avis")
    assert js_errors(dom) == ""
    assert 'data-species="Rara avis"' in dom and "No distribution model for this species" in dom
    assert "not assessed" in dom


def test_explorer_page_loads_no_species_data_until_asked(planner):
    page = planner["explorer"].read_text()
    assert "base64" not in page and page.count("species/") == 3  # the list only: one file per species
    files = sorted(p.name for p in (planner["explorer"].parent / "species").iterdir())
    assert files == ["0.js", "1.js", "2.js"]


def test_regions_table_sorts(planner, tmp_path):
    probe = page_with_script(planner["regions"], """
var th = document.querySelectorAll("#regions-table thead th")[1];
th.click();
var first = Array.prototype.map.call(document.querySelectorAll("#regions-table tbody tr"),
                                     function (r) { return r.cells[0].textContent; }).join(",");
th.click();
var second = Array.prototype.map.call(document.querySelectorAll("#regions-table tbody tr"),
                                      function (r) { return r.cells[0].textContent; }).join(",");
document.documentElement.setAttribute("data-order", first + "|" + second + "|" + th.getAttribute("aria-sort"));""")
    dom = dump_dom(tmp_path, probe)
    assert js_errors(dom) == ""
    assert re.search(r'data-order="([^"]*)"', dom).group(1) == "Alpha,Beta|Beta,Alpha|descending"
    assert dom.count('class="leaflet-interactive"') >= 2  # the two regions drawn
    screenshot(tmp_path, planner["regions"], "regions")


def test_protection_table_sorts_by_share(planner, tmp_path):
    probe = page_with_script(planner["protection"], """
var th = document.querySelectorAll("#protection-table thead th")[4];
th.click(); th.click();
document.documentElement.setAttribute("data-order", document.querySelector("#protection-table tbody tr").cells[0].textContent);""")
    dom = dump_dom(tmp_path, probe)
    assert js_errors(dom) == ""
    assert 'data-order="Rara avis"' in dom  # 60 % protected first when descending


def test_regions_page_opens_the_indicator_and_run_its_url_names(planner, tmp_path):
    probe = page_with_script(planner["regions"], """
document.documentElement.setAttribute("data-state", document.getElementById("run").value + "|" +
  document.querySelector("#regions-table tbody tr").cells[0].textContent + "|" + location.hash);""")
    dom = dump_dom(tmp_path, probe, fragment="indicator=richness%7Cwarm_full&z=5&lat=46.5&lon=7")
    assert js_errors(dom) == ""
    state = re.search(r'data-state="([^"]*)"', dom).group(1)
    assert state.startswith("warm_full|Alpha|#indicator=richness%7Cwarm_full&amp;z=5&amp;lat=46.5")


def test_explorer_survives_a_link_cut_short_mid_character(planner, tmp_path):
    dom = dump_dom(tmp_path, planner["explorer"], fragment="species=Ophrys%20apifera&layer=Presence%20w%C3")
    assert js_errors(dom) == ""  # decodeURIComponent threw on %C3 and stopped the page
    assert 'data-species="Ophrys apifera"' in dom


def test_explorer_counts_records_and_frames_a_species_without_records(planner, tmp_path):
    probe = page_with_script(planner["explorer"], TYPE_A_NAME + """
var waited = 0;
var shown = setInterval(function () {  // Ophrys shown, then Orchis chosen; its view once it is drawn
  var now = document.documentElement.getAttribute("data-species");
  if (now === "Ophrys apifera") { window.sdmChoose("Orchis mascula"); }
  if (now === "Orchis mascula" || (waited += 50) > 4000) {
    clearInterval(shown);
    setTimeout(function () { document.documentElement.setAttribute("data-after", window.location.hash); }, 300);
  }
}, 50);""")
    dom = dump_dom(tmp_path, probe)
    assert js_errors(dom) == ""
    after = re.search(r'data-after="([^"]*)"', dom).group(1)
    lat = float(re.search(r"lat=([-\d.]+)", after).group(1))
    lon = float(re.search(r"lon=([-\d.]+)", after).group(1))
    centre = (48.0 - 0.05 * H, 5.0 + 0.05 * W)  # the grid's centre, not Ophrys' records at 47.4 N 5.6 E
    assert abs(lat - centre[0]) < 0.1 and abs(lon - centre[1]) < 0.1
    assert "Cleaned records</th><td class=\"num\">0</td>" in dom


def test_explorer_names_with_quotes_are_text_not_markup(tmp_path):
    from sdm.maps.explorer import species_explorer

    evil = "Evil\" onclick=\"document.documentElement.setAttribute('data-pwned','yes')"
    y, x = 48.0 - 0.1 * (np.arange(H) + 0.5), 5.0 + 0.1 * (np.arange(W) + 0.5)
    cube = xr.Dataset({"suitability": (("species", "y", "x"), np.full((1, H, W), 0.7, dtype="float32")),
                       "presence": (("species", "y", "x"), np.ones((1, H, W), dtype=bool))},
                      coords={"species": ['Aa "quoted" bb'], "y": y, "x": x}).rio.write_crs("EPSG:4326")
    records = pd.DataFrame({"species": ['Aa "quoted" bb', evil, evil], "longitude": [5.5, 5.6, 5.6],
                            "latitude": [47.5, 47.4, 47.4]})
    page = species_explorer({"current": cube}, ["current_none"], records, None, tmp_path / "maps")
    for query, name in (("quoted", 'Aa "quoted" bb'), ("Evil", evil)):
        probe = page_with_script(page, f"""
var box = document.getElementById("search");
box.value = {query!r};
box.dispatchEvent(new Event("input"));
document.querySelector("#matches li").click();""")
        dom = dump_dom(tmp_path, probe)
        assert js_errors(dom) == ""
        assert not re.search(r'<html[^>]*\sdata-pwned="yes"', dom)  # the name's onclick never ran
        shown = re.search(r'data-species="([^"]*)"', dom)
        assert shown and html.unescape(shown.group(1)) == name
    assert "Cleaned records</th><td class=\"num\">2</td>" in dom  # two records, one place


def test_explorer_search_ignores_accents_and_lists_accented_names_in_order(tmp_path):
    from sdm.maps.explorer import species_explorer

    y, x = 48.0 - 0.1 * (np.arange(H) + 0.5), 5.0 + 0.1 * (np.arange(W) + 0.5)
    names = ["Épipactis muelleri", "Zeuxine strateumatica"]
    cube = xr.Dataset({"suitability": (("species", "y", "x"), np.full((2, H, W), 0.7, dtype="float32")),
                       "presence": (("species", "y", "x"), np.ones((2, H, W), dtype=bool))},
                      coords={"species": names, "y": y, "x": x}).rio.write_crs("EPSG:4326")
    records = pd.DataFrame({"species": ["Ophrys apifera"], "longitude": [5.5], "latitude": [47.5]})
    page = species_explorer({"current": cube}, ["current_none"], records, None, tmp_path / "maps")
    listed = re.findall(r'"name":"([^"]+)"', page.read_text())
    assert [n.encode().decode("unicode_escape") for n in listed] == ["Épipactis muelleri", "Ophrys apifera",
                                                                     "Zeuxine strateumatica"]
    probe = page_with_script(page, """
var box = document.getElementById("search");
box.value = "EPIPACTIS";
box.dispatchEvent(new Event("input"));
box.dispatchEvent(new KeyboardEvent("keydown", {key: "Enter"}));""")
    dom = dump_dom(tmp_path, probe)
    assert js_errors(dom) == "" and 'data-species="Épipactis muelleri"' in dom
