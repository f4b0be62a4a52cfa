"""``maps/protection.html``: threatened species ranked by the protected share of their predicted range, now and
in each run (``indicators/protection.csv``), beside the protection-gap map."""

from __future__ import annotations

import html as _html
from pathlib import Path

import pandas as pd

from sdm.maps.assets import ERROR_PROBE, SORTABLE_JS, check_offline_attributes, write_atomic
from sdm.maps.styles import IUCN_COLOURS


def _cell(column: str, value) -> str:
    if pd.isna(value):
        return '<td class="num" data-value="">–</td>'
    if column.startswith("protected_share_"):
        return f'<td class="num" data-value="{float(value):.4f}">{100 * float(value):.1f} %</td>'
    if isinstance(value, (int, float)):
        return f'<td class="num">{float(value):,.0f}</td>'
    text = _html.escape(str(value))
    colour = IUCN_COLOURS.get(str(value))
    return f'<td class="cat" style="background:{colour}">{text}</td>' if colour else f"<td>{text}</td>"


def protection_page(table: pd.DataFrame, out_html: str | Path, gap_map: str | None = None) -> Path:
    """Write the sortable table of :func:`sdm.protection.protection_table`, linking the gap map when there is one."""
    out_html = Path(out_html)
    heads = {c: c.replace("protected_share_", "protected: ").replace("_", " ") for c in table.columns}
    head = "".join(f"<th>{_html.escape(heads[c])}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(_cell(c, v) for c, v in zip(table.columns, row)) + "</tr>"
                   for row in table.itertuples(index=False, name=None))
    gap = (f'<p>Where the gaps are: <a href="{_html.escape(gap_map)}">the protection-gap map</a> (threatened '
           "species richness weighted by the unprotected share of each cell).</p>") if gap_map else ""
    page = "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', ERROR_PROBE,
        "<title>Protection of threatened species</title>", _CSS, "</head><body><main>",
        '<h1>Is what is threatened protected?</h1><p><a href="index.html">All maps and metrics</a></p>', gap,
        f"<p>{len(table)} species threatened (VU, EN, CR) now or in at least one run, least protected first. "
        "Protected share: the share of the species' predicted range (area-weighted) inside protected areas. "
        "Click a column to sort.</p>",
        f'<table id="protection-table" class="sortable"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>',
        "</main>", SORTABLE_JS, "</body></html>",
    ])
    check_offline_attributes(page, out_html)
    write_atomic(out_html, page)
    return out_html


_CSS = """<style>
  body { font: 14px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; background: #f6f7f9; }
  main { max-width: 1300px; margin: 0 auto; padding: 12px 20px 40px; } a { color: #1f5fa8; }
  table { border-collapse: collapse; background: #fff; }
  th, td { border: 1px solid #d5d8de; padding: 2px 6px; } th { background: #eef0f4; position: sticky; top: 0; }
  th[aria-sort="ascending"]::after { content: " ▲"; } th[aria-sort="descending"]::after { content: " ▼"; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; } td.cat { text-align: center; font-weight: 600; }
</style>"""
