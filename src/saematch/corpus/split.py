"""The run's document split: one assignment of whole documents to roles, shared by every fit and readout.

Roles: ``fit`` documents train every SAE (main, seed twins, every control); ``sae_eval``
documents, also on the train side, give each SAE its own ``eval.json``; ``fit`` and
``sae_eval`` together are the *train* documents on which features are paired and layers
are chosen; ``test`` documents are seen by no fit and score every readout.

Written once per run under ``RUN/split/`` (``split.parquet``: one row per document,
``split.json``: counts and the split's content hash), and every manifest built on it
records that hash.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from saematch.errors import ArtifactError, SaematchError

log = logging.getLogger(__name__)

ROLES = ("fit", "sae_eval", "test")
SPLIT_FILE = "split.parquet"
INFO_FILE = "split.json"
MIN_DOCS = 4  # below this a document split leaves a side without variation: contiguous blocks instead
N_BLOCKS = 16


def _take_docs(doc_ids: np.ndarray, counts: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """Indices into ``doc_ids`` taken in a seeded order until they hold the share of units closest to
    ``share`` (at least one document taken, at least one left)."""
    order = rng.permutation(len(doc_ids))
    cum = np.cumsum(counts[order])[:-1]
    k = int(np.argmin(np.abs(cum - share * counts.sum()))) + 1
    return order[:k]


def split_groups(group_N: np.ndarray, train_frac: float, sae_eval_frac: float, seed: int) -> np.ndarray:
    """Role code per group (0 fit, 1 sae_eval, 2 test) for the sorted unique groups of ``group_N``.

    ``train_frac`` of the units go to the train side (fit + sae_eval), whole groups at a time;
    ``sae_eval_frac`` of the train side's units go to sae_eval.
    """
    uniq, counts = np.unique(np.asarray(group_N), return_counts=True)
    if len(uniq) < 3:
        raise SaematchError(f"cannot split {int(counts.sum())} units into fit, eval and test documents: "
                            f"they come from {len(uniq)} group(s), at least 3 are needed")
    rng = np.random.default_rng([seed, 31])
    role = np.full(len(uniq), 2, np.int8)
    train = _take_docs(uniq, counts, train_frac, rng)
    if len(train) < 2:  # the train side needs a fit and an eval document
        train = np.argsort(-counts, kind="stable")[:2]
    role[train] = 0
    ev = _take_docs(uniq[train], counts[train], sae_eval_frac, rng)
    role[train[ev]] = 1
    return role


@dataclass(frozen=True)
class DocSplit:
    """Roles of the run's units, by document.

    doc_N: document of each unit; group_N: the resampling group of each unit (its document, or a
    contiguous block of units when the corpus has fewer than ``MIN_DOCS`` documents);
    role_G: role code (0 fit, 1 sae_eval, 2 test) per group id in ``groups_G``; method: 'documents' or
    'blocks'; digest: SHA-256 of the (group, role) table, recorded in every manifest that uses it.
    """

    doc_N: np.ndarray
    group_N: np.ndarray
    groups_G: np.ndarray
    role_G: np.ndarray
    method: str

    @cached_property
    def role_N(self) -> np.ndarray:
        return self.role_G[np.searchsorted(self.groups_G, self.group_N)]

    @property
    def fit_mask(self) -> np.ndarray:
        """Units that train SAEs."""
        return self.role_N == 0

    @property
    def sae_eval_mask(self) -> np.ndarray:
        """Units of each SAE's own eval.json (train side)."""
        return self.role_N == 1

    @property
    def train_mask(self) -> np.ndarray:
        """Units that pair features and choose layers (fit + sae_eval)."""
        return self.role_N < 2

    @property
    def test_mask(self) -> np.ndarray:
        """Units that score readouts; no fit has seen them."""
        return self.role_N == 2

    @cached_property
    def digest(self) -> str:
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.groups_G, np.int64).tobytes())
        h.update(np.ascontiguousarray(self.role_G, np.int8).tobytes())
        h.update(self.method.encode())
        return h.hexdigest()

    def groups_of(self, units: np.ndarray) -> np.ndarray:
        """Dense 0-based group index ``[len(units)]`` of the given units (for per-document sums)."""
        g = self.group_N[np.asarray(units, np.int64)]
        return np.unique(g, return_inverse=True)[1].ravel()

    def counts(self) -> dict[str, Any]:
        return {r: {"groups": int((self.role_G == i).sum()), "units": int((self.role_N == i).sum())}
                for i, r in enumerate(ROLES)}


def make_split(doc_N: np.ndarray, train_frac: float, sae_eval_frac: float, seed: int) -> DocSplit:
    doc_N = np.asarray(doc_N, np.int64)
    if doc_N.ndim != 1 or len(doc_N) == 0:
        raise SaematchError("the document split needs a non-empty list of units")
    n_docs = len(np.unique(doc_N))
    if n_docs >= MIN_DOCS:
        group, method = doc_N, "documents"
    else:
        log.warning("document split: only %d document(s); splitting %d units into %d contiguous blocks instead "
                    "(recorded as method 'blocks')", n_docs, len(doc_N), N_BLOCKS)
        group, method = np.arange(len(doc_N)) * N_BLOCKS // len(doc_N), "blocks"
    groups = np.unique(group)
    return DocSplit(doc_N, group, groups, split_groups(group, train_frac, sae_eval_frac, seed), method)


def write_split(split: DocSplit, out: Path) -> list[Path]:
    import pandas as pd

    from saematch.artifacts import atomic_path, write_json

    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / SPLIT_FILE) as tmp:
        pd.DataFrame({"group": split.groups_G, "role": [ROLES[r] for r in split.role_G]}).to_parquet(tmp, index=False)
    write_json(out / INFO_FILE, {"method": split.method, "digest": split.digest, **split.counts()})
    return [out / SPLIT_FILE, out / INFO_FILE]


def read_split(root: Path, doc_N: np.ndarray) -> DocSplit:
    """The split written under ``root``, for the corpus units' documents ``doc_N``."""
    import pandas as pd

    from saematch.artifacts import read_json

    info = read_json(root / INFO_FILE)
    try:
        df = pd.read_parquet(root / SPLIT_FILE)
    except Exception as exc:
        raise ArtifactError(f"missing or corrupt document split {root / SPLIT_FILE}: {exc}") from None
    doc_N = np.asarray(doc_N, np.int64)
    group = doc_N if info["method"] == "documents" else np.arange(len(doc_N)) * N_BLOCKS // len(doc_N)
    code = {r: i for i, r in enumerate(ROLES)}
    out = DocSplit(doc_N, group, df["group"].to_numpy(np.int64), np.array([code[r] for r in df["role"]], np.int8),
                   info["method"])
    if out.digest != info["digest"]:
        raise ArtifactError(f"document split {root} does not match its recorded digest; rebuild it")
    return out


def build(node: Any, ctx: Any, chash: str) -> None:
    """The split node: roles of the corpus documents, from its config slice (train share, SAE eval share, seed)."""
    from saematch.artifacts import Stage

    train_frac, sae_eval_frac, seed = node.params
    stage = Stage(node.path)
    stage.invalidate()
    split = make_split(ctx.corpus.units["doc"].to_numpy(), train_frac, sae_eval_frac, seed)
    files = write_split(split, node.path)
    stage.finish(chash, files, split_digest=split.digest, method=split.method, **split.counts())
    ctx.__dict__.pop("split", None)
    log.info("document split (%s): %s", split.method, split.counts())
