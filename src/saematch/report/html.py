"""A self-contained HTML report: images inlined as base64, no scripts, no network."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top}
th{background:#f3f3f3}img{max-width:100%;margin:.5em 0}.ctx{font-family:monospace;font-size:12px}
.grid{display:flex;flex-wrap:wrap;gap:1em}.grid figure{margin:0}h2{border-bottom:1px solid #ddd;padding-bottom:.2em}"""


def img(path: Path, caption: str = "") -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(caption)}</figcaption></figure>'


def table(df: pd.DataFrame, floatfmt: str = "{:.3g}") -> str:
    if df is None or df.empty:
        return "<p><em>none</em></p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for row in df.itertuples(index=False):
        cells = []
        for v in row:
            if isinstance(v, float):
                s = floatfmt.format(v)
            elif isinstance(v, (list, tuple)) or hasattr(v, "tolist"):
                s = "<br>".join(html.escape(str(x)) for x in list(v)[:3])
                cells.append(f'<td class="ctx">{s}</td>')
                continue
            else:
                s = html.escape(str(v))
            cells.append(f"<td>{s}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def page(title: str, sections: list[tuple[str, str]]) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    for heading, body in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>{body}")
    parts.append("</body></html>")
    return "".join(parts)
