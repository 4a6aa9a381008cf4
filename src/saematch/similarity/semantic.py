"""Semantic subspaces: matched pairs whose features belong to a concept group."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import yaml

from saematch.config import SimilarityConfig
from saematch.errors import ConfigError
from saematch.similarity.grid import score_space


def load_concepts(path: Optional[str]) -> dict[str, set[str]]:
    """Concept name -> lower-case keywords, from a YAML of lists (default: the shipped one)."""
    text = Path(path).read_text() if path else resources.files("saematch").joinpath("data/concepts.yaml").read_text()
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ConfigError(f"concepts file {path or '(default)'} must map each concept to a list of keywords")
    return {str(k): {str(w).lower() for w in v} for k, v in data.items()}


def concept_members(top_words: pd.Series, keywords: set[str]) -> np.ndarray:
    """Boolean per feature: one of its top-activating units is a keyword."""
    return np.array([any(str(w).lower() in keywords for w in ws) for ws in top_words], dtype=bool)


def concept_scores(
    pairs: pd.DataFrame, dec_a: np.ndarray, dec_b: np.ndarray, words_a: pd.Series, words_b: pd.Series,
    cfg: SimilarityConfig, concepts: dict[str, set[str]],
) -> list[dict]:
    """SVCCA and RSA of each concept's matched pairs (either feature in the concept), with nulls.

    No bootstrap here: concept subsets are small, and their permutation null is the test.
    """
    rows = []
    for concept, kw in concepts.items():
        in_a, in_b = concept_members(words_a, kw), concept_members(words_b, kw)
        sel = pairs[in_a[pairs["feature_a"].to_numpy()] | in_b[pairs["feature_b"].to_numpy()]]
        base = {"concept": concept, "n_pairs": len(sel)}
        if len(sel) < cfg.min_concept_pairs:
            rows.append({**base, "skipped": True, "metric": None})
            continue
        X, Y = dec_a[sel["feature_a"].to_numpy()], dec_b[sel["feature_b"].to_numpy()]
        for r in score_space(X, Y, ("svcca", "rsa"), cfg, "concept", bootstrap=False):
            rows.append({**base, "skipped": False, **r})
    return rows
