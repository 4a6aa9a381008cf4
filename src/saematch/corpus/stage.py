"""The corpus node: documents, per-model tokens and aligned units."""

from __future__ import annotations

from typing import Any


def build(node: Any, ctx: Any, chash: str) -> None:
    from saematch.corpus.build import build_corpus
    from saematch.corpus.sources import iter_documents

    cfg = ctx.cfg
    toks = {m.key: ctx.tokenizer(m) for m in cfg.models}
    build_corpus(cfg.corpus, iter_documents(cfg.corpus), toks, node.path, chash)
    ctx.__dict__.pop("corpus", None)  # a cached Corpus of the old artifact is stale now
