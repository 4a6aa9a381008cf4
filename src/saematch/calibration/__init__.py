"""Calibration: floors, ceilings, held-out matching and per-feature universality (issue 12).

A score that beats its permutation null is no evidence of shared features: a
random-init model beats it too.  Every readout is therefore placed between a
floor (a random-init model or a unit-shuffle control) and a ceiling (the same
model with an SAE trained from another seed), measured in the same run.

Public names are loaded lazily (PEP 562), so importing this package does no work
and the config module can import :class:`CalibrationConfig` without cycles.
"""

from saematch.lazy import lazy_exports

_EXPORTS = {
    "CalibrationConfig": "config",
    "split_units": "heldout", "shuffle_units": "heldout", "pair_correlations": "heldout",
    "HeldOut": "heldout", "heldout_match": "heldout", "run_heldout": "heldout",
    "floor_percentile": "universality", "twin_reference": "universality", "PairUniversality": "universality",
    "pair_universality": "universality", "Fraction": "universality", "universal_fraction": "universality",
    "universal_fractions": "universality", "UniversalityResult": "universality",
    "run_universality": "universality",
    "calibrated": "calibrate", "Resampled": "calibrate", "item_mean": "calibrate", "metric_readout": "calibrate",
    "Estimate": "calibrate", "CalibratedReadout": "calibrate", "calibrate_readout": "calibrate",
    "UnitSVCCA": "svcca_units", "svcca_on_units": "svcca_units", "svcca_units_readout": "svcca_units",
    "matched_unit_acts": "svcca_units",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
