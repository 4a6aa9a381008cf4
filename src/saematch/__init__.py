"""saematch: do language models of different size and family learn the same SAE features?

The public API (nothing heavy is imported until used)::

    cfg = saematch.load_config("configs/demo.yaml")
    saematch.run(cfg)                         # every stale node of the pipeline graph
    store = saematch.RunStore(cfg.run_dir)    # pairs, features, scores, best layers as DataFrames
    saematch.get_metric("cka-linear")(X, Y)   # any registered metric
"""

from saematch.lazy import lazy_exports

__version__ = "0.2.0"
__all__ = ["RunStore", "__version__", "get_metric", "load_config", "run", "status"]

_LAZY = {"load_config": "saematch.config", "run": "saematch.runs", "status": "saematch.runs",
         "get_metric": "saematch.similarity.base", "RunStore": "saematch.runstore"}
__getattr__, _dir = lazy_exports(__name__, _LAZY)
