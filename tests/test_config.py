import pytest

from conftest import write_config
from saematch.config import RunConfig, load_config
from saematch.configio import apply_override, from_dict
from saematch.errors import ConfigError

BASE = {"models": [{"name": "a", "layers": [1]}, {"name": "b", "layers": [2]}]}


def test_roundtrip_and_override(tmp_path):
    p = write_config(tmp_path / "c.yaml", BASE)
    cfg = load_config(p, ["corpus.max_tokens=20000", "models.1.layers=[3, 4]", "sae.lr=0.001"])
    assert isinstance(cfg, RunConfig)
    assert cfg.corpus.max_tokens == 20000
    assert cfg.models[1].layers == (3, 4)
    assert cfg.sae.lr == pytest.approx(1e-3)
    with pytest.raises(Exception):
        cfg.corpus.max_tokens = 1  # frozen


@pytest.mark.parametrize("override, key", [
    ("corpus.max_tokenz=5", "corpus.max_tokenz"),
    ("bogus=1", "bogus"),
    ("sae.k=many", "sae.k"),
    ("corpus.shuffle_docs=3", "corpus.shuffle_docs"),
    ("corpus.align=chars", "corpus.align"),
    ("models.0.layers=7", "models.0.layers"),
])
def test_bad_key_or_type_names_the_key(tmp_path, override, key):
    p = write_config(tmp_path / "c.yaml", BASE)
    with pytest.raises(ConfigError) as exc:
        load_config(p, [override])
    assert key in str(exc.value)


def test_validation_errors():
    with pytest.raises(ConfigError, match="at least two models"):
        from_dict(RunConfig, {"models": [{"name": "a", "layers": [1]}]})
    with pytest.raises(ConfigError, match="max_tokens"):
        from_dict(RunConfig, {**BASE, "corpus": {"max_tokens": 0}})
    with pytest.raises(ConfigError, match="missing required config key 'models.0.layers'"):
        from_dict(RunConfig, {"models": [{"name": "a"}, {"name": "b", "layers": [1]}]})


def test_override_syntax_error():
    with pytest.raises(ConfigError, match="key.path=value"):
        apply_override({}, "novalue")
