"""Co-activation correlation and top-k candidates with torch, on any device (meant for CUDA).

The same sums as the compiled CPU kernel (``coact.py``), vectorised: for a
block of A features, every co-activation (A feature a, unit u, B feature b) is
listed, its product ``X_A[u, a] * X_B[u, b]`` formed in float64 and scattered
into a dense ``[rows, F_B]`` float64 accumulator with ``index_add_``.  The
work is N * k_A * k_B products, as on the CPU, but spread over the GPU's
threads; blocks are sized by their number of products so the temporary index
arrays stay within ``max_products``.  Correlations are formed with the same
float64 formula as the CPU kernel and returned as float32 (NaN = excluded).

Top-k lists stay on the device (``torch.topk`` per block for the rows, a
running merge for the columns); only the ``[F, k]`` lists come back to the host.

On the CPU, torch is slower than the compiled kernel: ``match_grid`` uses
numba there and this path only where the device is CUDA (or when asked).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from saematch.matching.coact import Side
from saematch.matching.correlation import TopLists

MAX_PRODUCTS = 1 << 25  # co-activations listed at once (about 1 GB of temporaries)
MAX_ACC_BYTES = 1 << 30  # float64 accumulator of one block


class TorchSide:
    """A :class:`coact.Side` moved to a torch device once, to serve every pair of its layer."""

    def __init__(self, side: Side, device: str = "cuda"):
        import torch

        self.torch, self.device = torch, torch.device(device)

        def put(x, dtype):
            return torch.as_tensor(np.ascontiguousarray(x, np.int64 if dtype == torch.int64 else None)).to(self.device, dtype)

        self.ptr, self.idx, self.vals = put(side.ptr, torch.int64), put(side.idx, torch.int64), put(side.vals, torch.float32)
        self.lens = self.ptr[1:] - self.ptr[:-1]
        self.mu, self.inv = put(side.mu, torch.float64), put(side.inv, torch.float64)
        self.n_units, self.n_features = side.n_units, side.n_features


class TorchCorr:
    """Correlation rows of side A's features against side B's, computed with torch on ``device``.

    ``a``, ``b``: :class:`coact.Side` of each layer (CSC for A, CSR for B), or
    :class:`TorchSide` already on the device.
    """

    def __init__(self, a: Side | TorchSide, b: Side | TorchSide, device: str = "cuda",
                 max_products: int = MAX_PRODUCTS, max_acc_bytes: int = MAX_ACC_BYTES):
        a = a if isinstance(a, TorchSide) else TorchSide(a, device)
        b = b if isinstance(b, TorchSide) else TorchSide(b, device)
        if a.n_units != b.n_units:
            raise ValueError(f"the two sides cover different units ({a.n_units} vs {b.n_units})")
        torch = self.torch = a.torch
        self.device = a.device
        self.a, self.b = a, b
        self.n = float(a.n_units)
        self.shape = (a.n_features, b.n_features)
        # co-activations per A feature: the B row lengths of its units, summed
        cs = torch.cumsum(torch.cat([b.lens.new_zeros(1), b.lens[a.idx]]), 0)
        self.products = (cs[a.ptr[1:]] - cs[a.ptr[:-1]]).cpu().numpy()
        self.max_products, self.max_rows = max_products, max(1, max_acc_bytes // (8 * max(self.shape[1], 1)))

    def blocks(self) -> Iterator[tuple[int, int]]:
        """``(lo, hi)`` row ranges, each within the product and accumulator limits (a single row may exceed them)."""
        F_A, lo = self.shape[0], 0
        cum = np.concatenate([[0], np.cumsum(self.products)])
        while lo < F_A:
            hi = int(np.searchsorted(cum, cum[lo] + self.max_products, side="right")) - 1
            hi = min(max(hi, lo + 1), lo + self.max_rows, F_A)
            yield lo, hi
            lo = hi

    def rows(self, idx) -> "torch.Tensor":  # noqa: F821
        """``[len(idx), F_B]`` float32 correlations of the A features ``idx``, on the device."""
        torch, a, b = self.torch, self.a, self.b
        idx = torch.as_tensor(np.asarray(idx, np.int64)).to(self.device)
        F_B, dev = self.shape[1], self.device
        r_of_t, t = _expand(torch, a.ptr[idx], a.lens[idx], dev)  # every (row, entry of its A column)
        units = a.idx[t]
        t_of_p, s = _expand(torch, b.ptr[units], b.lens[units], dev)  # every co-activation
        key = r_of_t[t_of_p] * F_B + b.idx[s]
        prod = a.vals[t].double()[t_of_p] * b.vals[s].double()
        acc = torch.zeros(len(idx) * F_B, dtype=torch.float64, device=dev).index_add_(0, key, prod).view(len(idx), F_B)
        ia = a.inv[idx]
        C = (acc * (1.0 / self.n) - a.mu[idx, None] * b.mu[None, :]) * ia[:, None] * b.inv[None, :]
        C[ia == 0] = float("nan")
        C[:, b.inv == 0] = float("nan")
        return C.float()

    def __call__(self, lo: int, hi: int) -> np.ndarray:
        """``[hi - lo, F_B]`` float32 correlations of A features ``lo:hi`` (on the host, like ``CorrRows``)."""
        return self.rows(np.arange(lo, hi)).cpu().numpy()

    def top_lists(self, k: int) -> TopLists:
        """Top-k positive correlations of every row and column (``correlation.TopLists``), computed on the device."""
        torch = self.torch
        F_A, F_B = self.shape
        dev = self.device
        row_v = torch.zeros((F_A, k), dtype=torch.float32, device=dev)
        row_i = torch.full((F_A, k), -1, dtype=torch.int64, device=dev)
        col_v = torch.zeros((k, F_B), dtype=torch.float32, device=dev)
        col_i = torch.full((k, F_B), -1, dtype=torch.int64, device=dev)
        for lo, hi in self.blocks():
            C = self.rows(np.arange(lo, hi))
            W = torch.where(C > 0, C, torch.zeros((), dtype=C.dtype, device=dev))  # NaN and <= 0 never enter
            v, i = torch.topk(W, min(k, F_B), dim=1)
            row_v[lo:hi, :v.shape[1]], row_i[lo:hi, :v.shape[1]] = v, i
            v, i = torch.topk(W, min(k, hi - lo), dim=0)
            v, i = torch.cat([col_v, v]), torch.cat([col_i, i + lo])
            col_v, sel = torch.topk(v, k, dim=0)
            col_i = torch.gather(i, 0, sel)
        row_i[row_v <= 0] = -1
        col_i[col_v <= 0] = -1
        host = [x.cpu().numpy() for x in (row_v, row_i, col_v.T.contiguous(), col_i.T.contiguous())]
        return TopLists(*host)


def _expand(torch, start, lens, device):
    """For segments ``[start, start + lens)``: the segment of every element and the element, flattened."""
    total = int(lens.sum())
    seg = torch.repeat_interleave(torch.arange(len(lens), device=device), lens, output_size=total)
    first = torch.cumsum(lens, 0) - lens
    return seg, start[seg] + (torch.arange(total, device=device) - first[seg])


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())
