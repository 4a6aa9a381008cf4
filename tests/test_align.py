import numpy as np
import pytest

from conftest import _bpe_tokenizer, _unigram_tokenizer, sotu_texts
from saematch.corpus.align import TokenSpans, align, covering_token, filter_context, word_spans
from saematch.corpus.build import special_prefix, tokenize


@pytest.fixture(scope="module")
def toks():
    t = sotu_texts()
    return _bpe_tokenizer(t), _unigram_tokenizer(t)


TEXT = sotu_texts(1, 3000)[0] + " Don't stop: 1,234 cafés — naïve résumé!"


@pytest.mark.parametrize("mode", ["word", "boundary"])
def test_spans_match_text_and_tokens_cover_unit_end(toks, mode):
    spans = [tokenize(t, TEXT)[1] for t in toks]
    units = align(TEXT, spans, mode)
    assert len(units.char_end_U) > 100
    assert np.all(np.diff(units.char_end_U) > 0)  # in text order, unique
    for m, s in enumerate(spans):
        tok = units.token_MU[m]
        # the chosen token covers the unit's last character
        assert np.all(s.starts_T[tok] <= units.char_end_U - 1)
        assert np.all(s.ends_T[tok] >= units.char_end_U)
        assert np.all(np.diff(tok) >= 0)  # monotone: rows follow text order
    for a, b in zip(units.char_start_U, units.char_end_U):
        # word units are exact words; boundary units may end in whitespace a token absorbed
        assert TEXT[a:b].strip() and TEXT[a:b].lstrip() == TEXT[a:b]
        if mode == "word":
            assert TEXT[a:b].strip() == TEXT[a:b]
    if mode == "word":
        ws, we = word_spans(TEXT)
        got = set(zip(units.char_start_U.tolist(), units.char_end_U.tolist()))
        assert got <= set(zip(ws.tolist(), we.tolist()))
        assert len(got) >= 0.95 * len(ws)  # almost every word is visible to both
    else:
        for m, s in enumerate(spans):  # boundary units end exactly at a token end in both models
            assert np.all(s.ends_T[units.token_MU[m]] == units.char_end_U)


@pytest.mark.parametrize("mode", ["word", "boundary"])
def test_shared_tokenizer_reduces_to_token_alignment(toks, mode):
    s = tokenize(toks[0], TEXT)[1]
    units = align(TEXT, [s, s], mode)
    assert np.array_equal(units.token_MU[0], units.token_MU[1])
    if mode == "boundary":  # every (non-blank, non-empty) token is its own unit
        # a character split over several byte tokens is one unit, read at its last token
        n = len(s.starts_T)
        nonblank = [t for t in range(n) if s.ends_T[t] > s.starts_T[t] and TEXT[s.starts_T[t]:s.ends_T[t]].strip()
                    and not (t + 1 < n and s.ends_T[t + 1] == s.ends_T[t])]
        assert units.token_MU[0].tolist() == nonblank


def test_covering_token_takes_last_of_split_character():
    # two tokens share one span (a multi-byte character split in bytes)
    spans = TokenSpans(np.array([0, 3, 3, 4]), np.array([3, 4, 4, 6]))
    assert covering_token(spans, np.array([0, 2, 3, 5, 6])).tolist() == [0, 0, 2, 3, -1]


def test_filter_context():
    units = align("a b c d e f", [TokenSpans(np.arange(0, 11, 2), np.arange(1, 12, 2))] * 2, "word")
    kept = filter_context(units, window=4, min_context=2)
    assert (kept.token_MU[0] % 4 >= 2).all() and len(kept.char_end_U) == 2


def test_special_prefix(toks):
    assert special_prefix(toks[0]) == []
    assert special_prefix(toks[1]) == [toks[1].bos_token_id]
