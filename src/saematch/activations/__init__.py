"""Stage 2: residual-stream activations in a sharded on-disk store."""

from saematch.activations.extract import DistInfo, ExtractResult, extract_model
from saematch.activations.store import LayerStore, aligned_rows, open_layer

__all__ = ["DistInfo", "ExtractResult", "LayerStore", "aligned_rows", "extract_model", "open_layer"]
