import pytest
import torch

from saematch.activations.store import finish_layer, open_layer, shard_done, write_shard
from saematch.errors import ArtifactError


def _store(root, n=1000, d=8, S=256):
    x = torch.randn(n, d).to(torch.bfloat16)
    for k in range(-(-n // S)):
        write_shard(root, k, x[k * S:(k + 1) * S])
    finish_layer(root, "", n, S, d_model=d, dtype="bfloat16")
    return x


def test_read_rows_and_batches(tmp_path):
    x = _store(tmp_path)
    s = open_layer(tmp_path)
    torch.testing.assert_close(s.read_rows(200, 700), x[200:700].float())
    it = s.batches(128, start=0, stop=900, seed=3)
    seen = torch.cat([next(it) for _ in range(7)])  # 896 of the 900 rows, one epoch
    assert seen.shape == (896, 8)
    # shuffled but drawn from the right rows, without repeats inside the epoch
    assert not torch.equal(seen, x[:896].float())
    rows = {tuple(r.tolist()) for r in x[:900].float()}
    assert all(tuple(r.tolist()) in rows for r in seen)
    assert len({tuple(r.tolist()) for r in seen}) == 896
    # loops forever with exact batch sizes
    assert all(next(it).shape == (128, 8) for _ in range(20))


def test_torn_shard_refused(tmp_path):
    _store(tmp_path)
    shard = tmp_path / "shard_00001.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="torn"):
        open_layer(tmp_path)
    assert not shard_done(tmp_path, 1, 256)
    shard.write_bytes(data[:-4] + b"\0\0\0\0")  # same size, flipped bytes
    with pytest.raises(ArtifactError, match="checksum"):
        open_layer(tmp_path)


def test_manifest_needs_every_shard(tmp_path):
    x = torch.randn(600, 4).to(torch.bfloat16)
    write_shard(tmp_path, 0, x[:256])
    write_shard(tmp_path, 2, x[512:])
    with pytest.raises(ArtifactError, match="shard 1"):
        finish_layer(tmp_path, "", 600, 256, d_model=4, dtype="bfloat16")
