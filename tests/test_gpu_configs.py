"""The GPU/hub configs parse, validate, and resolve everything that needs no download."""

from pathlib import Path

import pytest

from saematch.config import load_config
from saematch.graph.plan import build_plan, layer_pairs, model_pairs

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["demo", "quick", "gemma-2-2b-vs-9b", "pythia-70m-vs-160m"])
def test_config_parses(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert len(model_pairs(cfg)) >= 1
    for a, b in model_pairs(cfg):
        assert len(layer_pairs(cfg, a, b)) == len(a.layers) * len(b.layers)
    plan = build_plan(cfg)
    sae_hashes = {plan.hashes[n.id] for n in plan.stage("train") if "@" not in n.key[0]}  # controls aside
    assert len(sae_hashes) == sum(len(m.layers) for m in cfg.models)


def test_gemma_scope_ids_resolve_in_the_saelens_registry():
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    registry = get_pretrained_saes_directory()
    cfg = load_config(CONFIGS / "gemma-2-2b-vs-9b.yaml")
    for spec, n_layers in zip(cfg.models, (26, 42)):
        assert spec.sae_release in registry
        ids = registry[spec.sae_release].saes_map
        for layer in spec.layers:
            assert layer < n_layers
            assert spec.sae_id.format(layer=layer) in ids
