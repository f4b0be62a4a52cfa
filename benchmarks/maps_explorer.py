"""Size of a run's ``maps`` folder and how fast the species explorer opens, in headless Chromium.

Usage: ``python benchmarks/maps_explorer.py [results/maps] [--repeats 5]``

For each repeat, Chromium opens ``species.html`` from the file system with networking disabled (the flags of the
test suite, real time: no virtual-time budget). A script injected at the end of a copy of the page types the name
of the first species with a model into the search box, whose data script then delays the page's load event; at
that event it records, from the browser's clock after navigation start, the first (contentful) paint when
Chromium reports it, DOMContentLoaded (the page and the species list ready to search), and the load event (the
typed species' layer and records on the map). Chromium's start-up is outside these numbers; the process's wall
time is printed too.
Prints the folder size (MB, total and per part), the number of species files, and the median and range of each
time (ms).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
         "--dump-dom"]

PROBE = """<script>
(function () {
  var first = SDM_EXPLORER.species.filter(function (s) { return s.modelled; })[0];
  var box = document.getElementById("search");
  box.value = first.name;
  box.dispatchEvent(new Event("input"));
  box.dispatchEvent(new KeyboardEvent("keydown", {key: "Enter"}));  // its script, inserted now, delays "load"
  window.addEventListener("load", function () {
    var t = performance.timing, out = {};
    performance.getEntriesByType("paint").forEach(function (p) { out[p.name] = p.startTime; });
    out.dom_ms = t.domContentLoadedEventEnd - t.navigationStart;
    out.load_ms = t.loadEventStart - t.navigationStart;
    out.species_shown = document.documentElement.getAttribute("data-species") === first.name &&
      !!document.querySelector("img.species-layer");
    document.documentElement.setAttribute("data-bench", JSON.stringify(out));
  });
})();
</script></body>"""


def folder_size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def measure(page: Path, profile: Path) -> dict:
    probe = page.with_name("_bench_species.html")
    probe.write_text(page.read_text().replace("</body>", PROBE, 1))
    try:
        start = time.perf_counter()
        dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", probe.resolve().as_uri()],
                             capture_output=True, text=True, timeout=300).stdout
        wall = time.perf_counter() - start
    finally:
        probe.unlink()
    found = re.search(r'data-bench="([^"]*)"', dom)
    if not found:
        raise RuntimeError(f"no measurement in the page (errors: {re.findall(r'data-js-errors=.([^>]*)', dom)})")
    result = json.loads(found.group(1).replace("&quot;", '"'))
    result["chromium_wall_ms"] = 1000 * wall
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("maps", nargs="?", default="results/maps", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    page = args.maps / "species.html"
    if not page.is_file():
        raise SystemExit(f"{page} not found: run the workflow with maps.explorer: true first")
    total = folder_size_mb(args.maps)
    species = args.maps / "species"
    print(f"{args.maps}: {total:.1f} MB in all; species/ {folder_size_mb(species):.1f} MB in "
          f"{len(list(species.glob('*.js')))} files; species.html {page.stat().st_size / 1e6:.2f} MB; "
          f"largest species file {max(p.stat().st_size for p in species.glob('*.js')) / 1e6:.2f} MB")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            runs.append(measure(page, Path(tmp) / f"profile{i}"))
            shutil.rmtree(Path(tmp) / f"profile{i}", ignore_errors=True)
    if not all(r["species_shown"] for r in runs):
        raise SystemExit("the chosen species was not drawn by the load event")
    for key in ("first-paint", "first-contentful-paint", "dom_ms", "load_ms", "chromium_wall_ms"):
        values = [r[key] for r in runs if key in r]
        if values:
            print(f"{key:>24}: median {statistics.median(values):8.1f} ms  (range {min(values):.1f}-"
                  f"{max(values):.1f}, n={len(values)})")


if __name__ == "__main__":
    main()
