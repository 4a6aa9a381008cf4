"""Feature cards: firing statistics and top-activating contexts of every feature."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import scipy.sparse as sp

from saematch.features.encode import FeatureStats, top_units

_ALNUM = re.compile(r"\w", re.UNICODE)


def context(text: str, start: int, end: int, chars: int) -> str:
    """Text around ``[start, end)`` with the unit marked as «unit», on one line."""
    left = text[max(0, start - chars):start]
    right = text[end:end + chars]
    return " ".join(f"{left}«{text[start:end]}»{right}".split())


def feature_cards(
    X: sp.csr_matrix, units: pd.DataFrame, texts: list[str], n_top: int, chars: int, dense_threshold: float,
    model: str, layer: int,
) -> pd.DataFrame:
    """One row per feature: freq, mean/max activation, dead/dense flags, top units with contexts."""
    st = FeatureStats.of(X)
    top_u, top_a = top_units(X, n_top)
    doc = units["doc"].to_numpy()
    cs, ce = units["char_start"].to_numpy(), units["char_end"].to_numpy()
    words = units["text"].to_numpy()
    ctx, tw = [], []
    for f in range(X.shape[1]):
        us = [u for u in top_u[f] if u >= 0]
        ctx.append([context(texts[doc[u]], cs[u], ce[u], chars) for u in us])
        tw.append([str(words[u]) for u in us])
    return pd.DataFrame({
        "model": model, "layer": layer, "feature": np.arange(X.shape[1]),
        "freq": st.freq, "mean_act": st.mean, "max_act": st.max,
        "dead": st.dead, "dense": st.freq > dense_threshold,
        "top_units": [list(map(int, u[u >= 0])) for u in top_u],
        "top_acts": [list(map(float, a[:len(w)])) for a, w in zip(top_a, tw)],
        "top_words": tw, "contexts": ctx,
    })


def punctuation_only(words: list[str]) -> bool:
    """True when no top unit holds a letter or digit (punctuation/special tokens only)."""
    return len(words) > 0 and not any(_ALNUM.search(w) for w in words)
