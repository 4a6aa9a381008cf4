"""One-to-one pairing with maximum total positive correlation (Hungarian)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from saematch.config import MatchConfig, _check, opt
from saematch.registry import MATCHERS


@MATCHERS.register("hungarian")
@dataclass(frozen=True)
class HungarianConfig(MatchConfig):
    """Dense ``linear_sum_assignment`` up to ``dense_limit`` features; beyond, a certified sparse solve."""

    candidates_k: int = opt(16, "sparse solve: top-K candidate correlations per row and column")
    dense_limit: int = opt(8192, "solve densely while max(F_A, F_B) <= this (the solver is recorded; "
                                 "both give the optimum)")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.candidates_k >= 1, "matching.candidates_k must be >= 1")

    def assign(self, XA: Any, XB: Any) -> Any:
        from saematch.matching.assign import hungarian_dense, hungarian_sparse
        from saematch.matching.correlation import check_pair, corr_blocks, dense_corr, topk_candidates

        if max(XA.shape[1], XB.shape[1]) <= self.dense_limit:
            return hungarian_dense(dense_corr(XA, XB)[0])
        st = check_pair(XA, XB)
        G = topk_candidates(XA, XB, st, self.candidates_k)
        return hungarian_sparse(G, lambda: corr_blocks(XA, XB, st), self.candidates_k)
