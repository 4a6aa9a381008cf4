"""Inference: one document split for every fit, layers chosen on train documents, floors that keep token identity."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from conftest import tiny_run, write_config
from saematch.calibration.config import CalibrationConfig
from saematch.calibration.readouts import LayerPairInputs, Matching, matched_corr_row
from saematch.calibration.stage import best_layers
from saematch.cli import main
from saematch.corpus.split import make_split
from saematch.matching.docstats import pair_doc_stats
from saematch.registry import MATCHERS


def test_split_keeps_documents_whole_is_seeded_and_has_every_role():
    doc = np.repeat(np.arange(40), np.random.default_rng(0).integers(5, 30, 40))
    s = make_split(doc, 0.5, 0.2, seed=3)
    for d in np.unique(doc):
        assert len(np.unique(s.role_N[doc == d])) == 1
    assert s.method == "documents" and s.fit_mask.any() and s.sae_eval_mask.any() and s.test_mask.any()
    assert abs(s.train_mask.mean() - 0.5) < 0.1
    assert s.digest == make_split(doc, 0.5, 0.2, seed=3).digest != make_split(doc, 0.5, 0.2, seed=4).digest
    few = make_split(np.zeros(100, int), 0.5, 0.2, 0)
    assert few.method == "blocks" and few.test_mask.any() and few.fit_mask.any()


def test_batches_restricted_to_rows_never_yield_another_row(tmp_path):
    import torch

    from saematch.activations.store import LayerStore, finish_layer, write_shard

    n, d = 1000, 4
    x = torch.arange(n, dtype=torch.float32)[:, None].repeat(1, d)  # every row carries its own index
    for k in range(4):
        write_shard(tmp_path, k, x[k * 256:(k + 1) * 256].to(torch.float16), "h")
    finish_layer(tmp_path, "h", n, 256, d_model=d, dtype="float16")
    store = LayerStore.open(tmp_path)
    rows = np.sort(np.random.default_rng(0).choice(256, 100, replace=False)) * 3  # exact in float16
    seen = torch.cat([next(it) for it in [store.batches(32, rows=rows, seed=1)] for _ in range(12)])
    assert set(seen[:, 0].long().tolist()) <= set(rows.tolist())
    assert len(set(seen[:, 0].long().tolist())) == len(rows)  # three epochs cover every row


@pytest.fixture(scope="module")
def recorded_run(tiny_dir, tmp_path_factory):
    """A tiny run with every control, recording the rows each SAE's training batches came from."""
    from saematch.activations.store import LayerStore

    tmp = tmp_path_factory.mktemp("inference")
    cfg = {**tiny_run(tiny_dir, tmp, [0, 2], [1, 2], 3000), "extract": {"dtype": "float32", "shard_units": 256},
           "sae": {"expansion": 2, "k": 4, "training_tokens": 2048, "batch_size": 128, "loss_windows": 0},
           "similarity": {"n_permutations": 10, "n_bootstrap": 0, "max_units": 300},
           "calibration": {"n_bootstrap": 20}}
    path = write_config(tmp / "c.yaml", cfg)
    seen: list[tuple[str, np.ndarray]] = []
    orig = LayerStore.batches

    def spy(self, *args, **kw):
        seen.append((str(self.root), np.asarray(kw.get("rows"))))
        return orig(self, *args, **kw)

    mp = pytest.MonkeyPatch()
    mp.setattr(LayerStore, "batches", spy)
    try:
        assert main(["run", str(path)]) == 0
    finally:
        mp.undo()
    return tmp / "run", seen


def test_no_sae_trains_on_a_test_or_eval_document(recorded_run):
    run, seen = recorded_run
    units = pd.read_parquet(run / "corpus" / "units.parquet")
    split = pd.read_parquet(run / "split" / "split.parquet")
    info = json.loads((run / "split" / "split.json").read_text())
    assert info["method"] == "documents"
    assert info["test"]["groups"] >= 4 and info["fit"]["groups"] + info["sae_eval"]["groups"] >= 4
    fit_docs = set(split.loc[split.role == "fit", "group"])
    fit_units = set(np.flatnonzero(units["doc"].isin(fit_docs)).tolist())
    trained = {r for r, _ in seen}
    assert any("@random" in r for r in trained) and any("@embed" in r for r in trained)  # controls train too
    for root, rows in seen:
        assert rows.ndim == 1 and set(rows.tolist()) == fit_units, root
    saes = list((run / "saes").glob("*/layer_*/manifest.json"))
    assert len(saes) == len(trained) + 4  # + the seed twins, which read their source's store
    for man in saes:
        assert json.loads(man.read_text())["split_digest"] == info["digest"], man
    for man in (run / "controls" / "pairs").glob("*/manifest.json"):
        assert json.loads(man.read_text())["split_digest"] == info["digest"]


def test_readouts_carry_both_floors_and_say_what_they_resample(recorded_run):
    run, _ = recorded_run
    r = pd.read_parquet(run / "calibration" / "readouts.parquet")
    mc = r[r.readout == "matched-corr"]
    assert len(mc) == 4 and mc["floor_random"].notna().all() and mc["floor_token"].notna().all()
    assert (mc["floor"] >= np.maximum(mc["floor_random"], mc["floor_token"]) - 1e-12).all()
    assert (mc["resamples"] == "test documents (bootstrap)").all() and mc["ci_method"].isin(["bca", "percentile"]).all()
    raw = r[r.readout.isin(["mknn", "cka-linear"])]
    assert raw["ceiling"].isna().all() and (raw["calibrated_kind"] == "floor-adjusted (s - f) / (1 - f)").all()
    assert raw["perm_p_value"].between(1 / 201, 1).all() and (raw["perm_k"] == 200).all()  # Gröger et al. beside it
    assert r["resamples"].notna().all()
    best = pd.read_parquet(run / "calibration" / "best.parquet")
    assert set(best["chosen_by"]) <= {"own train score", "matched-corr train score"}


def test_best_layer_is_the_train_choice_when_test_noise_disagrees():
    rows = []
    rng = np.random.default_rng(0)
    for lb in range(5):
        train = [0.1, 0.5, 0.3, 0.2, 0.1][lb]
        test = train + rng.normal(0, 0.01) + (0.5 if lb == 3 else 0.0)  # noise makes layer 3 the test maximum
        rows.append({"readout": "matched-corr", "model_a": "a", "layer_a": 2, "model_b": "b", "layer_b": lb,
                     "score": test, "score_train": train})

    class Ctx:
        def n_layers(self, spec):
            return 6

        def spec(self, key):
            return key

    best = best_layers(pd.DataFrame(rows), Ctx())
    assert int(best["layer_b"].iloc[0]) == 1 and int(best["test_would_pick"].iloc[0]) == 3


def _planted(rng, contextual: bool, n_docs=60, per_doc=60, vocab=30):
    """Units with a token each and a context shared by their document.  Token model: one feature per token.
    Contextual model: one feature per (token, context), so the same word fires different features in different
    documents.  Returns documents, two noisy views of the model (A, its seed twin), two of another model sharing
    those features (B, its twin), and the token embeddings' features (one per token)."""
    doc = np.repeat(np.arange(n_docs), per_doc)
    tok = rng.integers(0, vocab, len(doc))
    ctxt = (rng.random(n_docs)[doc] > 0.5).astype(int)
    code = tok * 2 + ctxt if contextual else tok
    onehot = np.eye(2 * vocab if contextual else vocab)[code]
    view = lambda Z: sp.csr_matrix(Z * np.exp(0.3 * rng.standard_normal(Z.shape)))  # noqa: E731
    return doc, view(onehot), view(onehot), view(onehot), view(onehot), view(np.eye(vocab)[tok])


@pytest.mark.parametrize("contextual", [False, True])
def test_token_floor_explains_pure_token_features_not_shared_contextual_ones(contextual):
    from saematch.calibration.heldout import heldout_match

    rng = np.random.default_rng(1)
    doc, XA, XA2, XB, XB2, XE = _planted(rng, contextual)
    split = make_split(doc, 0.5, 0.2, 0)
    test = np.flatnonzero(split.test_mask)
    group = split.groups_of(test)
    cfg = MATCHERS.get("hungarian")()

    def matching(X, Y):
        h = heldout_match(X, Y, split.train_mask, cfg)
        pairs = pd.DataFrame({"feature_a": h.feature_a, "feature_b": h.feature_b, "correlation": h.corr_test,
                              "corr_train": h.corr_train})
        return Matching(pairs, pair_doc_stats(X[test], Y[test], h.feature_a, h.feature_b, group),
                        np.zeros((X.shape[1], 2)), np.zeros((Y.shape[1], 2)))

    inp = LayerPairInputs(matching(XA, XB), {"embed_a": matching(XE, XB)}, (matching(XA, XA2), matching(XB, XB2)),
                          {}, {}, group)
    row = matched_corr_row(inp, CalibrationConfig(n_bootstrap=50))
    assert row["floor_kind"] == "embed_a" and row["ceiling"] > row["score"] - 0.02
    if contextual:  # beyond token identity: clearly above the token floor, CI included
        assert row["calibrated_token"] > 0.5 and row["calibrated_token_ci_low"] > 0.3
    else:  # everything the pair shares, the embeddings carry: the token floor reaches the score and the ceiling
        assert abs(row["score"] - row["floor_token"]) < 0.02 and row["uninformative"]
        assert not np.isfinite(row["calibrated_token"]) or abs(row["calibrated_token"]) < 0.15
