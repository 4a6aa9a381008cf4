"""Prompts for the interactions stage: held-out sentences where two models predict the same next word.

A prompt is the start of a sentence of a test document, up to (not including) one of its words.
It qualifies when both models' top-1 next token agrees on a word (not punctuation): either each model
predicts the first token of the true next word in its own tokenizer, or the two top-1 tokens decode to
the same word.  The
target of each model is its own top-1 token.  The input variables are ``n`` words of the prompt,
drawn at random among the non-stopwords whose tokens cover no other word in either tokenizer, so
masking a word masks all of its tokens and nothing else.  Everything is computed on character
offsets of the corpus' own tokenization of the document.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from saematch.corpus.align import WORD_RE
from saematch.errors import SaematchError

log = logging.getLogger(__name__)
SENTENCE_RE = re.compile(r"[^.!?\n]+[.!?]?")

Top1 = Callable[[str, np.ndarray], np.ndarray]  # (model key, ids [T]) -> top-1 next token at every position [T]
Decode = Callable[[str, int], str]


@dataclass(frozen=True)
class DocTokens:
    """One document's tokenization for one model (no special tokens)."""

    ids: np.ndarray
    starts: np.ndarray
    ends: np.ndarray


@dataclass(frozen=True)
class Prompt:
    """One prompt and its input words.

    doc: document index; start, stop: the prompt's characters in the document; words: the chosen words'
    character spans, in text order; target_word: the word both models predict; via: 'truth' (both predict
    the true next word) or 'top1' (both top-1 tokens decode to it); ids: per model key, the model's input
    (special prefix included); positions: per model key, one array of input positions per word; target:
    per model key, its top-1 token id.
    """

    doc: int
    start: int
    stop: int
    text: str
    words: tuple[tuple[int, int], ...]
    word_texts: tuple[str, ...]
    target_word: str
    via: str
    ids: dict[str, np.ndarray]
    positions: dict[str, tuple[np.ndarray, ...]]
    target: dict[str, int]


def stopwords() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def _norm(piece: str) -> str:
    return piece.replace("\u2581", " ").replace("\u0120", " ").strip().lower()


def _is_word(text: str) -> bool:
    return text.replace("'", "").replace("\u2019", "").replace("-", "").isalpha()


def word_tokens(tok: DocTokens, t0: int, t1: int, spans: list[tuple[int, int]]) -> list[np.ndarray]:
    """For each word span, the tokens in [t0, t1) whose characters overlap it (zero-width tokens never do)."""
    s, e = tok.starts[t0:t1], tok.ends[t0:t1]
    real = e > s
    return [t0 + np.nonzero(real & (s < b) & (e > a))[0] for a, b in spans]


def _candidates(text: str, a: int, b: int, toks: dict[str, DocTokens], n_words: int, max_tokens: int,
                stop: frozenset[str]) -> list[tuple[int, dict[str, int], list[int], list[tuple[int, int]]]]:
    """Possible cut points of the sentence [a, b): (word index k of the next word, first token of that word per
    model, indices of the eligible words before it, every word span)."""
    spans = [(a + m.start(), a + m.end()) for m in WORD_RE.finditer(text[a:b])]
    if len(spans) < n_words + 1:
        return []
    first: dict[str, int] = {}
    per_word: dict[str, list[np.ndarray]] = {}
    for key, tok in toks.items():
        t0 = int(np.searchsorted(tok.starts, a, side="left"))
        t1 = int(np.searchsorted(tok.ends, b, side="right"))
        first[key] = t0
        per_word[key] = word_tokens(tok, t0, t1, spans)
    ok = []
    for w, (ws, we) in enumerate(spans):
        word = text[ws:we]
        if not _is_word(word) or word.lower() in stop:
            continue
        exclusive = all(len(per_word[k][w]) and all(
            sum(int(t in pw) for pw in per_word[k]) == 1 for t in per_word[k][w]) for k in toks)
        if exclusive:
            ok.append(w)
    out = []
    for k in range(1, len(spans)):
        cut = spans[k][0]
        nxt: dict[str, int] = {}
        for key, tok in toks.items():
            t = int(np.searchsorted(tok.ends, cut, side="right"))  # first token ending after the cut
            if t >= len(tok.ids) or t <= first[key] or t - first[key] > max_tokens or tok.starts[t] < spans[k - 1][1]:
                break
            nxt[key] = t
        else:
            eligible = [w for w in ok if w < k]
            if len(eligible) >= n_words:
                out.append((k, nxt, eligible, spans))
    return out


def select_prompts(texts: list[str], docs: list[int], toks: dict[str, list[DocTokens]], prefix: dict[str, list[int]],
                   test_span: Callable[[int, int, int], bool], top1: Top1, decode: Decode, n_words: int,
                   n_prompts: int, max_sentences: int, max_tokens: int, seed: int) -> tuple[list[Prompt], dict]:
    """Up to ``n_prompts`` prompts from the sentences of ``docs`` (tried in a seeded order, at most
    ``max_sentences``); ``test_span(doc, a, b)`` says whether characters [a, b) are held-out text.
    The first key of ``toks`` is model A, the second model B."""
    keys = list(toks)
    stop = stopwords()
    rng = np.random.default_rng([seed, 23])
    sents = [(d, m.start(), m.end()) for d in docs for m in SENTENCE_RE.finditer(texts[d])]
    order = rng.permutation(len(sents))
    prompts: list[Prompt] = []
    tried = cands = 0
    for i in order:
        if len(prompts) >= n_prompts or tried >= max_sentences:
            break
        d, a, b = sents[int(i)]
        if not test_span(d, a, b):
            continue
        doc_toks = {k: toks[k][d] for k in keys}
        found = _candidates(texts[d], a, b, doc_toks, n_words, max_tokens, stop)
        tried += 1
        if not found:
            continue
        last = max(c[1][keys[0]] for c in found), max(c[1][keys[1]] for c in found)
        pred = {}
        for key, stop_t in zip(keys, last):
            t0 = int(np.searchsorted(doc_toks[key].starts, a, side="left"))
            ids = np.concatenate([prefix[key], doc_toks[key].ids[t0:stop_t]]).astype(np.int64)
            pred[key] = (t0, top1(key, ids))
        agree = []
        for k, nxt, eligible, spans in found:
            cands += 1
            tops = {key: int(pred[key][1][len(prefix[key]) + nxt[key] - pred[key][0] - 1]) for key in keys}
            true_word = _is_word(texts[d][spans[k][0]:spans[k][1]])
            if true_word and all(tops[key] == int(doc_toks[key].ids[nxt[key]]) for key in keys):
                agree.append((k, nxt, eligible, spans, tops, "truth"))
            elif (w := _norm(decode(keys[0], tops[keys[0]]))) and _is_word(w) and w == _norm(decode(keys[1], tops[keys[1]])):
                agree.append((k, nxt, eligible, spans, tops, "top1"))
        if not agree:
            continue
        k, nxt, eligible, spans, tops, via = agree[int(rng.integers(len(agree)))]
        chosen = sorted(int(w) for w in rng.choice(eligible, size=n_words, replace=False))
        cut = spans[k][0]
        ids, positions = {}, {}
        for key in keys:
            t0 = pred[key][0]
            ids[key] = np.concatenate([prefix[key], doc_toks[key].ids[t0:nxt[key]]]).astype(np.int64)
            per = word_tokens(doc_toks[key], t0, nxt[key], [spans[w] for w in chosen])
            positions[key] = tuple(p - t0 + len(prefix[key]) for p in per)
        target_word = texts[d][spans[k][0]:spans[k][1]] if via == "truth" else _norm(decode(keys[0], tops[keys[0]]))
        prompts.append(Prompt(d, a, cut, texts[d][a:cut], tuple(spans[w] for w in chosen),
                              tuple(texts[d][spans[w][0]:spans[w][1]] for w in chosen), target_word, via, ids,
                              positions, tops))
    stats = {"sentences_tried": tried, "cut_points_tried": cands, "prompts": len(prompts)}
    if not prompts:
        raise SaematchError(f"no prompt for the interactions stage: in {tried} held-out sentences ({cands} cut points "
                            f"with at least {n_words} content words before them) the models' top-1 next words never "
                            f"agreed; raise interactions.max_sentences or lower interactions.n_words")
    if len(prompts) < 2:
        raise SaematchError(f"only 1 prompt for the interactions stage in {tried} held-out sentences ({cands} cut "
                            f"points): the prompt floor needs two; raise interactions.max_sentences")
    if len(prompts) < n_prompts:
        log.warning("interactions: %d of %d prompts found in %d held-out sentences", len(prompts), n_prompts, tried)
    return prompts, stats
