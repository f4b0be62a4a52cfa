"""``maps/index.html``: links to every map, the run's metrics and a species table."""

from __future__ import annotations

import html as _html
import math
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from sdm.maps.assets import ERROR_PROBE, check_offline_attributes, relative_url, write_atomic
from sdm.maps.styles import IUCN_COLOURS

def index_page(
    maps: dict[str, str | Path],
    metrics: dict,
    out_html: str | Path,
    species_table: pd.DataFrame | None = None,
    pages: dict[str, str | Path] | None = None,
    config: dict | None = None,
) -> Path:
    """Write ``maps/index.html``: links to every page and map, the run's metrics, an optional species table and
    the run's config (collapsed).

    Parameters
    ----------
    maps : link text -> HTML file; linked relatively to ``out_html`` (the files need not exist yet).
    metrics : nested dict rendered as headed sections and tables: a dict of scalars becomes a two-column table;
        a dict of dicts of scalars becomes one table with a row per outer key and a column per inner key (e.g.
        ``{"SDM test AUC": {"deep": {"auc": 0.91}, "baseline": {"auc": 0.84}}}``); deeper dicts become
        sub-sections; lists of dicts become tables; other lists are comma-joined. Floats are shown to 4
        significant digits.
    out_html : the file to write.
    pages : link text -> HTML file of the pages that are not indicator maps (species explorer, regions, ...).
    config : the run's configuration, shown as YAML in a collapsed block.
    species_table : optional table of statuses; cells holding a category code of ``redlist.CATEGORIES`` are
        coloured with the IUCN colours and a text box filters the rows. A long table with one row per species x
        run (``sdm.status.status_table``: ``species``, ``scenario``, [``dispersal``], ``status`` or ``category``,
        [``redlist_category``]) is shown as species x run (plus the Red List column), with the full table
        under a collapsed "All columns"; any other table is shown as it is.
    """
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    esc = _html.escape

    links = _links(maps, out_html)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        ERROR_PROBE,
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>Extinction-risk indicator maps</title>",
        _INDEX_CSS,
        "</head><body><main>",
        "<h1>Extinction-risk indicator maps</h1>",
        *([f'<section id="pages"><h2>Explore</h2><ul class="maps">{_links(pages, out_html)}</ul></section>']
          if pages else []),
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
    if config is not None:
        text = yaml.safe_dump(_plain(config), sort_keys=False, allow_unicode=True)
        parts += ['<section id="config"><h2>Configuration</h2><details><summary>The run\'s configuration '
                  "(YAML, with the schema's defaults filled in)</summary>", f"<pre>{esc(text)}</pre></details></section>"]
    parts += ["</main>", _INDEX_JS, "</body></html>"]
    page = "\n".join(parts)
    check_offline_attributes(page, out_html)
    write_atomic(out_html, page)
    return out_html


def _links(pages: dict, out_html: Path) -> str:
    return "\n".join(f'<li><a href="{_html.escape(relative_url(Path(p), out_html.parent))}">{_html.escape(str(label))}'
                     "</a></li>" for label, p in pages.items())


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
  pre { background: #fff; border: 1px solid #d5d8de; padding: 8px; overflow: auto; font-size: 12px; }
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
