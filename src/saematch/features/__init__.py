"""Stage 4: sparse SAE feature activations on the aligned units, and feature cards.

Layout of ``RUN/features/<model>/layer_LL/``: ``acts.safetensors`` (CSR
``[units, d_sae]``), ``cards.parquet`` (one row per feature: firing statistics
and top contexts), ``manifest.json`` last.
"""

from saematch.features.encode import Encoded, FeatureStats, encode_sparse, load_csr, save_csr, top_units

__all__ = ["Encoded", "FeatureStats", "encode_sparse", "load_csr", "save_csr", "top_units"]
