"""The ``calibration`` config section: held-out matching, universality and calibrated readouts.

Fields are declared with :func:`saematch.configfields.opt` (documentation and hash flag);
this module does not import ``saematch.config``, so the config module can import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from saematch.configfields import check as _check
from saematch.configfields import opt as _opt


@dataclass(frozen=True)
class CalibrationConfig:
    """Floors, ceilings, held-out correlations and per-feature universality."""

    heldout_frac: float = _opt(0.5, "share of the units (whole documents) used to pair features; the rest "
                                    "score the pairs (held-out correlations)")
    universal_floor_pct: float = _opt(99.0, "a universal pair's held-out correlation beats this percentile "
                                            "of the floor control's")
    universal_twin_frac: float = _opt(0.5, "... and reaches this fraction of its features' seed-twin correlation")
    twin_reference: Literal["min", "geomean", "mean"] = _opt(
        "min", "how the two features' twin correlations combine: min (lenient), geomean (attenuation bound), mean")
    n_bootstrap: int = _opt(200, "document-bootstrap replicates (matched correlation, universality)")
    n_halfsamples: int = _opt(50, "half-samples for the readouts a duplicated unit or pair would break (mknn, CKA, "
                                  "SVCCA, RSA): their SD is the SE of a normal interval")
    n_permutations: int = _opt(200, "row permutations of the permutation-calibrated score of raw readouts "
                                    "(Gröger et al. 2026)")
    perm_alpha: float = _opt(0.05, "level of the permutation-calibrated score's threshold")
    ci_level: float = _opt(0.95, "two-sided level of the percentile bootstrap CIs")
    uninformative_se: float = _opt(3.0, "a readout is uninformative unless its ceiling exceeds its floor by "
                                        "this many bootstrap SEs")
    min_items_per_dim: int = _opt(10, "SVCCA is degenerate below this many items per kept dimension")
    svcca_var: float = _opt(0.99, "SVCCA keeps the components up to this share of the variance (then caps them)")
    svcca_max_units: int = _opt(2000, "SVCCA on units: seeded subsample of the test units beyond this (it keeps at "
                                      "most one direction per min_items_per_dim units)")
    max_pairs: int = _opt(256, "decoder-row readouts (SVCCA, RSA): seeded subsample of matched pairs beyond this")
    seed: int = _opt(0, "seed of the unit split, the bootstraps and the subsamples")

    def __post_init__(self) -> None:
        _check(0.0 < self.heldout_frac < 1.0, "calibration.heldout_frac must be in (0, 1)")
        _check(0.0 < self.universal_floor_pct < 100.0, "calibration.universal_floor_pct must be in (0, 100)")
        _check(0.0 <= self.universal_twin_frac <= 1.0, "calibration.universal_twin_frac must be in [0, 1]")
        _check(self.twin_reference in ("min", "geomean", "mean"),
               "calibration.twin_reference must be 'min', 'geomean' or 'mean'")
        _check(self.n_bootstrap >= 2, "calibration.n_bootstrap must be >= 2 (an SE needs two replicates)")
        _check(self.n_halfsamples >= 2, "calibration.n_halfsamples must be >= 2 (an SE needs two replicates)")
        _check(0.0 < self.ci_level < 1.0, "calibration.ci_level must be in (0, 1)")
        _check(self.n_permutations >= 1, "calibration.n_permutations must be >= 1")
        _check(0.0 < self.perm_alpha < 1.0, "calibration.perm_alpha must be in (0, 1)")
        _check(self.uninformative_se >= 0.0, "calibration.uninformative_se must be >= 0")
        _check(self.min_items_per_dim >= 1, "calibration.min_items_per_dim must be >= 1")
        _check(0.0 < self.svcca_var <= 1.0, "calibration.svcca_var must be in (0, 1]")
        _check(self.svcca_max_units >= 3, "calibration.svcca_max_units must be >= 3")
        _check(self.max_pairs >= 3, "calibration.max_pairs must be >= 3")
