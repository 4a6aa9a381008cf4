"""Stage 5: similarity metrics, permutation nulls, layer grids and semantic subspaces."""

from saematch.similarity.base import BaseMetric, check_xy, get_metric, metric_names
from saematch.similarity.metrics.maps import ProcrustesMap, RidgeMap
from saematch.similarity.nulls import Scored, bootstrap, permutation_null, score_with_null

__all__ = ["BaseMetric", "ProcrustesMap", "RidgeMap", "Scored", "bootstrap", "check_xy", "get_metric",
           "metric_names", "permutation_null", "score_with_null"]
