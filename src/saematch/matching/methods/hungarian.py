"""One-to-one pairing with maximum total positive correlation (Hungarian)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from saematch.config import MatchConfig, _check, opt
from saematch.registry import MATCHERS


@MATCHERS.register("hungarian")
@dataclass(frozen=True)
class HungarianConfig(MatchConfig):
    """Dense ``linear_sum_assignment`` up to ``dense_limit`` features; beyond, a certified sparse solve
    (``matching.grid``: one pass keeps every row's and column's top ``certify_k`` correlations, on
    ``matching.device``; the warm-started solve starts from the top ``candidates_k``; the certificate
    checks the rest by bounds and recomputes only the rows the bounds cannot clear)."""

    candidates_k: int = opt(16, "sparse solve: top-K candidate correlations per row and column")
    certify_k: int = opt(32, "sparse solve: top correlations per row and column kept by the pass and checked "
                             "exactly by the optimality certificate (>= candidates_k)")
    max_rounds: int = opt(12, "sparse solve: solves before the optimality gap is reported as it stands")
    dense_limit: int = opt(8192, "solve densely while max(F_A, F_B) <= this (the solver is recorded; "
                                 "both give the optimum)")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.candidates_k >= 1, "matching.candidates_k must be >= 1")
        _check(self.certify_k >= self.candidates_k, "matching.certify_k must be >= matching.candidates_k")
        _check(self.max_rounds >= 1, "matching.max_rounds must be >= 1")

    def assign(self, XA: Any, XB: Any) -> Any:
        from saematch.devices import resolve
        from saematch.matching.assign import hungarian_dense
        from saematch.matching.correlation import dense_corr
        from saematch.matching.grid import match_grid

        if max(XA.shape[1], XB.shape[1]) <= self.dense_limit:
            return hungarian_dense(dense_corr(XA, XB)[0])
        res = match_grid({0: XA}, {0: XB}, device=resolve(self.device or "cpu"), k=self.candidates_k, k_max=self.certify_k,
                         max_rounds=self.max_rounds)
        return res[(0, 0)]
