"""The maps in a real browser: headless Chromium opens them from file:// with networking disabled.

JS errors and failed loads are recorded by the page itself on ``<html data-js-errors>`` (see sdm.maps), so the
dumped DOM shows them. Screenshots go to ``$SDM_SCREENSHOT_DIR`` when set (for a person to look at).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
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


def chromium(tmp_path: Path, page: Path, *args: str) -> str:
    """Run headless Chromium on ``page`` with all network access refused; returns stdout."""
    cmd = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
        "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",  # no DNS, a dead proxy
        f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=5000", *args,
        page.resolve().as_uri(),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def dump_dom(tmp_path: Path, page: Path) -> str:
    dom = chromium(tmp_path, page, "--dump-dom")
    assert "<html" in dom, "Chromium returned no DOM"
    return dom


def js_errors(dom: str) -> str:
    m = re.search(r'data-js-errors="([^"]*)"', dom)
    return m.group(1) if m else ""


def screenshot(tmp_path: Path, page: Path, name: str) -> Path:
    png = tmp_path / f"{name}.png"
    chromium(tmp_path, page, f"--screenshot={png}", "--window-size=1280,800", "--hide-scrollbars")
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
