"""Readable text and JSON renderings of pair-store query results."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd


def _plain(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return [_plain(x) for x in v.tolist()]
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    return v


def to_json(df: pd.DataFrame) -> str:
    return json.dumps([{k: _plain(v) for k, v in row.items()} for row in df.to_dict(orient="records")], indent=1)


def table(df: pd.DataFrame, max_width: int = 60) -> str:
    """A plain fixed-width table; list and long text cells are shortened."""
    if df.empty:
        return "(no rows)"
    shown = df.copy()
    for col in shown.columns:
        shown[col] = [_cell(v, max_width) for v in shown[col]]
    return shown.to_string(index=False)


def _cell(v: Any, width: int) -> str:
    v = _plain(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    s = " | ".join(map(str, v[:3])) if isinstance(v, list) else str(v)
    return s if len(s) <= width else s[: width - 1] + "…"


def clip_around(ctx: str, width: int) -> str:
    """``width`` characters of a context, centred on its «marked» unit."""
    if len(ctx) <= width:
        return ctx
    mid = ctx.find("«")
    start = max(0, min(mid - width // 3, len(ctx) - width)) if mid >= 0 else 0
    out = ctx[start:start + width]
    return ("…" + out[1:] if start > 0 else out)[: width - 1] + ("…" if start + width < len(ctx) else out[-1])


def side_by_side(df: pd.DataFrame, n_contexts: int = 2, width: int = 58) -> str:
    """Top pairs with the contexts of both features next to each other."""
    if df.empty:
        return "(no pairs)"
    out = []
    for i, row in enumerate(df.to_dict(orient="records"), 1):
        out.append(f"#{i}  A L{row['layer_a']} f{row['feature_a']}  ~  B L{row['layer_b']} f{row['feature_b']}"
                   f"   r = {row['correlation']:.3f}   freq {row['freq_a']:.3%} / {row['freq_b']:.3%}")
        ca, cb = list(_plain(row["contexts_a"]))[:n_contexts], list(_plain(row["contexts_b"]))[:n_contexts]
        for a, b in zip(ca + [""] * (n_contexts - len(ca)), cb + [""] * (n_contexts - len(cb))):
            la, lb = clip_around(a, width), clip_around(b, width)
            out.append(f"    A: {la:<{width}}  B: {lb}")
    return "\n".join(out)
