"""The torch co-activation path equals the compiled CPU kernel, on every device present (CUDA when there is one)."""

import numpy as np
import pytest
import scipy.sparse as sp

from saematch.matching.coact import Side
from saematch.matching.correlation import check_pair, corr_rows, top_lists
from saematch.matching.gpu import TorchCorr, cuda_available
from saematch.matching.grid import match_grid

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not cuda_available(), reason="no CUDA device"))]


def topk_acts(N, F, k, rng):
    idx = np.argsort(rng.random((N, F)), axis=1)[:, :k]
    vals = rng.exponential(1.0, (N, k)).astype(np.float32)
    return sp.csr_matrix((vals.ravel(), idx.ravel(), np.arange(0, N * k + 1, k)), shape=(N, F))


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(0)
    XA, XB = topk_acts(2500, 120, 6, rng), topk_acts(2500, 90, 6, rng)
    XB = (XB + XA[:, :90] * 0.5).tocsr()
    XA = XA.tolil()
    XA[:, 5] = 0  # a feature that never fires: NaN row
    XA = XA.tocsr()
    st = check_pair(XA, XB)
    sides = Side.a(XA, st.a.mean, st.a.std, st.valid_a), Side.b(XB, st.b.mean, st.b.std, st.valid_b)
    return XA, XB, corr_rows(XA, XB, st), sides


@pytest.mark.parametrize("device", DEVICES)
def test_torch_rows_equal_the_numba_kernel(pair, device):
    _, _, rows, (a, b) = pair
    tc = TorchCorr(a, b, device, max_products=3000)  # small blocks: several per run, and single rows
    assert len(list(tc.blocks())) > 3
    want = rows(0, 120)
    got = np.concatenate([tc(lo, hi) for lo, hi in tc.blocks()])
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(got[5]).all()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, equal_nan=True)
    idx = np.array([3, 5, 77, 119])
    np.testing.assert_allclose(tc.rows(idx).cpu().numpy(), rows.rows(idx), rtol=1e-6, atol=1e-7, equal_nan=True)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_top_lists_equal_the_numba_heaps(pair, device):
    _, _, rows, (a, b) = pair
    want = top_lists(rows, 4)
    got = TorchCorr(a, b, device, max_products=3000).top_lists(4)
    np.testing.assert_allclose(got.row_v, want.row_v, rtol=1e-6)
    np.testing.assert_allclose(got.col_v, want.col_v, rtol=1e-6)
    for k in (1, 2, 4):
        g, w = got.graph(k).toarray(), want.graph(k).toarray()
        np.testing.assert_array_equal(g > 0, w > 0)
        np.testing.assert_allclose(g, w, rtol=1e-6)
        for gb, wb in zip(got.bounds(k), want.bounds(k)):
            np.testing.assert_allclose(gb, wb, rtol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_grid_with_torch_backend_equals_numba(pair, device):
    XA, XB, _, _ = pair
    want = match_grid({0: XA}, {0: XB}, k=2, k_max=4)
    got = match_grid({0: XA}, {0: XB}, k=2, k_max=4, device=device, backend="torch")
    assert got[0, 0].gap == want[0, 0].gap == 0.0
    np.testing.assert_array_equal(got[0, 0].rows, want[0, 0].rows)
    np.testing.assert_array_equal(got[0, 0].cols, want[0, 0].cols)
