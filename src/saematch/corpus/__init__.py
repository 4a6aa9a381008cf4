"""Stage 1: text to token windows and cross-tokenizer aligned units."""

from saematch.corpus.align import DocUnits, TokenSpans, align
from saematch.corpus.build import Corpus, CorpusSummary, Window, build_corpus
from saematch.corpus.sources import Document, iter_documents

__all__ = ["Corpus", "CorpusSummary", "DocUnits", "Document", "TokenSpans", "Window", "align", "build_corpus", "iter_documents"]
