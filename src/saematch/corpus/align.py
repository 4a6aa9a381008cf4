"""Cross-tokenizer alignment: text units both models can see.

Two tokenizers cut the same text differently, so "position i" means nothing
across models.  An *aligned unit* is a span of text with one activation row per
model:

* ``word`` (default): every word (``\\w+`` with inner apostrophes/hyphens) or
  punctuation mark.  A model's row for the unit is the **last token covering the
  unit's final character**; for a causal model that is the first position at
  which the whole unit has been read.
* ``boundary``: every character position where *both* tokenizations have a
  token boundary.  The unit spans from the previous common boundary.  With a
  shared tokenizer, every boundary is common, so this is exactly token-level
  alignment.

With a shared tokenizer both modes pick the *same* token index in both models.
All functions here are pure: offsets in, index arrays out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

WORD_RE = re.compile(r"\w+(?:['’\-]\w+)*|[^\w\s]", re.UNICODE)


@dataclass(frozen=True)
class TokenSpans:
    """Character spans of one document's tokens for one model.

    starts_T, ends_T: int64 arrays, ``text[starts[t]:ends[t]]`` is token t.
    """

    starts_T: np.ndarray
    ends_T: np.ndarray

    def __post_init__(self) -> None:
        if self.starts_T.shape != self.ends_T.shape:
            raise ValueError("starts and ends must have the same shape")


@dataclass(frozen=True)
class DocUnits:
    """Aligned units of one document.

    char_start_U, char_end_U: unit spans in the document text.
    token_MU: ``token_MU[m, u]`` is model m's token index (within the document)
    whose activation row represents unit u.
    """

    char_start_U: np.ndarray
    char_end_U: np.ndarray
    token_MU: np.ndarray


def covering_token(spans: TokenSpans, chars_U: np.ndarray) -> np.ndarray:
    """Index of the last token whose span contains each character, or -1."""
    if len(spans.starts_T) == 0:
        return np.full(len(chars_U), -1, dtype=np.int64)
    # zero-width tokens (e.g. special tokens) cannot cover anything: give them start > any char
    starts = np.where(spans.ends_T > spans.starts_T, spans.starts_T, np.iinfo(np.int64).max)
    order = np.argsort(starts, kind="stable")
    idx = np.searchsorted(starts[order], chars_U, side="right") - 1
    ok = idx >= 0
    tok = np.where(ok, order[np.clip(idx, 0, None)], -1)
    ok &= spans.ends_T[np.clip(tok, 0, None)] > chars_U
    # several tokens can share a span (a multi-byte character split in bytes): take the last
    last_same = _last_with_same_span(spans)
    return np.where(ok, last_same[np.clip(tok, 0, None)], -1)


def _last_with_same_span(spans: TokenSpans) -> np.ndarray:
    n = len(spans.starts_T)
    out = np.arange(n)
    for t in range(n - 2, -1, -1):
        if spans.starts_T[t + 1] == spans.starts_T[t] and spans.ends_T[t + 1] == spans.ends_T[t]:
            out[t] = out[t + 1]
    return out


def word_spans(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Start and end characters of every word or punctuation mark."""
    matches = [(m.start(), m.end()) for m in WORD_RE.finditer(text)]
    if not matches:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    arr = np.asarray(matches, dtype=np.int64)
    return arr[:, 0], arr[:, 1]


def align_words(text: str, spans: list[TokenSpans]) -> DocUnits:
    """Word units visible to every model (see module doc)."""
    starts, ends = word_spans(text)
    tokens = np.stack([covering_token(s, ends - 1) for s in spans]) if spans else np.zeros((0, len(ends)), np.int64)
    keep = (tokens >= 0).all(axis=0)
    return DocUnits(starts[keep], ends[keep], tokens[:, keep])


def align_boundaries(text: str, spans: list[TokenSpans]) -> DocUnits:
    """Units ending where every model has a token boundary (see module doc)."""
    common: np.ndarray | None = None
    last_tok: list[dict[int, int]] = []
    for s in spans:
        valid = s.ends_T > s.starts_T
        ends = s.ends_T[valid]
        tok_ids = np.nonzero(valid)[0]
        # the last token ending at each character position represents it
        mapping = dict(zip(ends.tolist(), tok_ids.tolist()))
        last_tok.append(mapping)
        e = np.unique(ends)
        common = e if common is None else np.intersect1d(common, e)
    if common is None or len(common) == 0:
        z = np.zeros(0, np.int64)
        return DocUnits(z, z, np.zeros((len(spans), 0), np.int64))
    # drop units that are pure whitespace
    prev = np.concatenate([[0], common[:-1]])
    keep = np.array([bool(text[a:b].strip()) for a, b in zip(prev, common)], dtype=bool)
    ends = common[keep]
    starts = prev[keep]
    # trim leading whitespace from each unit's span
    starts = np.array([a + (len(text[a:b]) - len(text[a:b].lstrip())) for a, b in zip(starts, ends)], dtype=np.int64)
    tokens = np.array([[m[int(e)] for e in ends] for m in last_tok], dtype=np.int64).reshape(len(spans), -1)
    return DocUnits(starts, ends, tokens)


def align(text: str, spans: list[TokenSpans], mode: str) -> DocUnits:
    if mode == "word":
        return align_words(text, spans)
    if mode == "boundary":
        return align_boundaries(text, spans)
    raise ValueError(f"unknown alignment mode {mode!r}")


def filter_context(units: DocUnits, window: int, min_context: int) -> DocUnits:
    """Drop units within ``min_context`` tokens of a window start in any model.

    Windows cut each document at multiples of ``window`` tokens, so a token at
    index t sits at position ``t % window`` of its window.
    """
    keep = ((units.token_MU % window) >= min_context).all(axis=0)
    return DocUnits(units.char_start_U[keep], units.char_end_U[keep], units.token_MU[:, keep])
