"""Build and read the corpus artifact: documents, per-model tokens, aligned units.

Layout of ``RUN/corpus/``::

    docs.parquet            doc, doc_id, text           (text cut to the token budget)
    tokens_<model>.parquet  doc, ids, starts, ends      (per-model tokenization, no specials)
    units.parquet           unit, doc, char_start, char_end, text, tok_<model> ...
    manifest.json           config hash, models, prefixes, counts; written last
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Protocol

import numpy as np

from saematch.artifacts import Stage, atomic_path, verify_record
from saematch.config import CorpusConfig
from saematch.corpus.align import TokenSpans, align, filter_context
from saematch.corpus.sources import Document
from saematch.errors import ArtifactError, SaematchError

log = logging.getLogger(__name__)


class Tokenizer(Protocol):
    def __call__(self, text: str, **kwargs: Any) -> Any: ...


def special_prefix(tokenizer: Tokenizer) -> list[int]:
    """Special tokens (such as BOS) that the tokenizer puts before any text."""
    plain = list(tokenizer("hello world", add_special_tokens=False)["input_ids"])
    full = list(tokenizer("hello world", add_special_tokens=True)["input_ids"])
    for i in range(len(full)):
        if full[i:i + len(plain)] == plain:
            return full[:i]
    return []


def tokenize(tokenizer: Tokenizer, text: str) -> tuple[np.ndarray, TokenSpans]:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = np.asarray(enc["input_ids"], dtype=np.int64)
    offs = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    return ids, TokenSpans(offs[:, 0].copy(), offs[:, 1].copy())


def _write_parquet(path: Path, columns: dict[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(pa.table(columns), tmp)


@dataclass(frozen=True)
class CorpusSummary:
    """What the corpus stage produced."""

    n_docs: int
    n_units: int
    n_tokens: dict[str, int]  # tokens per model


def build_corpus(
    cfg: CorpusConfig,
    docs: Iterable[Document],
    tokenizers: dict[str, Tokenizer],
    out: Path,
    config_hash: str,
) -> CorpusSummary:
    """Cut documents to the token budget, tokenize for every model, align units."""
    keys = list(tokenizers)
    first = tokenizers[keys[0]]
    texts: list[str] = []
    doc_ids: list[str] = []
    used = 0
    for doc in docs:
        ids, spans = tokenize(first, doc.text)
        if len(ids) == 0:
            continue
        keep = min(len(ids), cfg.max_tokens - used, cfg.max_doc_tokens or len(ids))
        text = doc.text if keep == len(ids) else doc.text[: int(spans.ends_T[keep - 1])]
        texts.append(text)
        doc_ids.append(doc.doc_id)
        used += keep
        if used >= cfg.max_tokens:
            break
    if not texts:
        raise SaematchError(f"the corpus '{cfg.source}' is empty: no document has any text")
    if used < cfg.max_tokens:
        log.warning("corpus has only %d tokens of the %d requested; using what exists", used, cfg.max_tokens)

    per_model: dict[str, list[tuple[np.ndarray, TokenSpans]]] = {k: [tokenize(tokenizers[k], t) for t in texts] for k in keys}
    cols: dict[str, list[Any]] = {"doc": [], "char_start": [], "char_end": [], "text": []}
    tok_cols: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    for d, text in enumerate(texts):
        units = align(text, [per_model[k][d][1] for k in keys], cfg.align)
        units = filter_context(units, cfg.window, cfg.min_context)
        cols["doc"].append(np.full(len(units.char_end_U), d, np.int64))
        cols["char_start"].append(units.char_start_U)
        cols["char_end"].append(units.char_end_U)
        cols["text"].extend(text[a:b] for a, b in zip(units.char_start_U, units.char_end_U))
        for m, k in enumerate(keys):
            tok_cols[k].append(units.token_MU[m])
    n_units = int(sum(len(c) for c in cols["doc"]))
    if n_units == 0:
        raise SaematchError("the corpus has no text units that all models can see")

    out.mkdir(parents=True, exist_ok=True)
    stage = Stage(out)
    stage.invalidate()
    _write_parquet(out / "docs.parquet", {"doc": np.arange(len(texts)), "doc_id": doc_ids, "text": texts})
    files = [out / "docs.parquet"]
    for k in keys:
        enc = per_model[k]
        _write_parquet(out / f"tokens_{k}.parquet", {
            "doc": np.arange(len(texts)),
            "ids": [e[0].tolist() for e in enc],
            "starts": [e[1].starts_T.tolist() for e in enc],
            "ends": [e[1].ends_T.tolist() for e in enc],
        })
        files.append(out / f"tokens_{k}.parquet")
    unit_cols: dict[str, Any] = {
        "unit": np.arange(n_units),
        "doc": np.concatenate(cols["doc"]),
        "char_start": np.concatenate(cols["char_start"]),
        "char_end": np.concatenate(cols["char_end"]),
        "text": cols["text"],
    }
    for k in keys:
        unit_cols[f"tok_{k}"] = np.concatenate(tok_cols[k])
    _write_parquet(out / "units.parquet", unit_cols)
    files.append(out / "units.parquet")
    n_tokens = {k: int(sum(len(e[0]) for e in per_model[k])) for k in keys}
    stage.finish(
        config_hash, files, models=keys, prefix={k: special_prefix(tokenizers[k]) for k in keys},
        window=cfg.window, n_docs=len(texts), n_units=n_units, n_tokens=n_tokens, align=cfg.align,
    )
    log.info("corpus: %d docs, %d aligned units, tokens %s", len(texts), n_units, n_tokens)
    return CorpusSummary(len(texts), n_units, n_tokens)


@dataclass(frozen=True)
class Window:
    """One forward-pass window: tokens [start, stop) of document ``doc``."""

    doc: int
    start: int
    stop: int


class Corpus:
    """Read side of the corpus artifact."""

    def __init__(self, root: Path, verify: bool = True):
        self.root = Path(root)
        man = Stage(self.root).manifest()
        for rec in man["files"]:
            verify_record(self.root, rec, digest=verify)
        self.manifest = man
        self.models: list[str] = man["models"]
        self.window: int = man["window"]

    def _read(self, name: str) -> Any:
        import pyarrow.parquet as pq

        try:
            return pq.read_table(self.root / name)
        except Exception as exc:
            raise ArtifactError(f"corrupt corpus file {self.root / name}: {exc}") from None

    @cached_property
    def units(self) -> Any:
        """pandas DataFrame of aligned units (one row per unit, in unit order)."""
        return self._read("units.parquet").to_pandas()

    @cached_property
    def texts(self) -> list[str]:
        return self._read("docs.parquet").column("text").to_pylist()

    @property
    def n_units(self) -> int:
        return int(self.manifest["n_units"])

    def token_ids(self, model: str) -> list[np.ndarray]:
        col = self._read(f"tokens_{model}.parquet").column("ids").to_pylist()
        return [np.asarray(x, dtype=np.int64) for x in col]

    def prefix(self, model: str) -> list[int]:
        return list(self.manifest["prefix"][model])

    def windows(self, model: str) -> list[Window]:
        """All windows of ``model``, in document order (the order rows are stored)."""
        out = []
        for d, ids in enumerate(self.token_ids(model)):
            for s in range(0, len(ids), self.window):
                out.append(Window(d, s, min(s + self.window, len(ids))))
        return out

    def unit_windows(self, model: str) -> tuple[np.ndarray, np.ndarray]:
        """For each unit: its window index in :meth:`windows` and its position there (prefix included)."""
        lens = [len(ids) for ids in self.token_ids(model)]
        first_window = np.concatenate([[0], np.cumsum([-(-n // self.window) for n in lens])[:-1]])
        u = self.units
        tok = u[f"tok_{model}"].to_numpy()
        win = first_window[u["doc"].to_numpy()] + tok // self.window
        pos = tok % self.window + len(self.prefix(model))
        return win.astype(np.int64), pos.astype(np.int64)
