"""Many-to-one (``max``: each A feature's best B feature) and mutual-best pairing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from saematch.config import MatchConfig, opt
from saematch.registry import MATCHERS


def _weights(XA: Any, XB: Any, dense_limit: int) -> Any:
    from saematch.matching.correlation import check_pair, dense_corr, topk_candidates

    if max(XA.shape[1], XB.shape[1]) <= dense_limit:
        return dense_corr(XA, XB)[0]
    return topk_candidates(XA, XB, check_pair(XA, XB), 1)


@MATCHERS.register("max")
@dataclass(frozen=True)
class MaxConfig(MatchConfig):
    """Each A feature takes its most correlated B feature (B features may repeat)."""

    dense_limit: int = opt(8192, "dense correlation while max(F_A, F_B) <= this, else top-1 candidates")

    def assign(self, XA: Any, XB: Any) -> Any:
        from saematch.matching.assign import match_max

        return match_max(_weights(XA, XB, self.dense_limit))


@MATCHERS.register("mutual")
@dataclass(frozen=True)
class MutualConfig(MatchConfig):
    """Pairs that are each other's best match."""

    dense_limit: int = opt(8192, "dense correlation while max(F_A, F_B) <= this, else top-1 candidates")

    def assign(self, XA: Any, XB: Any) -> Any:
        from saematch.matching.assign import match_mutual

        return match_mutual(_weights(XA, XB, self.dense_limit))
