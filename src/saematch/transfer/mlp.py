"""The nonlinear map: a linear skip plus one GELU hidden layer, trained in torch.

Fixed seed, early stopping on a validation split of the training units; it
starts at the ridge solution when given one (the hidden branch starts at zero)
and then keeps that skip fixed, training only the hidden branch on what ridge
misses (training the skip too moves it off the ridge optimum faster than the
branch can help, so early stopping returned ridge itself); on validation it can
only improve on ridge.  Its linear part, which carries
steering directions, is its mean Jacobian over the training rows (exact, from
the GELU derivative).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from saematch.transfer.maps import BaseMap, _ridge_solve, check_pair


class _Net(torch.nn.Module):
    def __init__(self, d_in: int, d_out: int, hidden: int):
        super().__init__()
        self.skip = torch.nn.Linear(d_in, d_out)
        self.up = torch.nn.Linear(d_in, hidden)
        self.down = torch.nn.Linear(hidden, d_out)
        torch.nn.init.zeros_(self.down.weight)  # the hidden branch starts silent: f starts at the skip map
        torch.nn.init.zeros_(self.down.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.down(torch.nn.functional.gelu(self.up(x)))


class MLPMap(BaseMap):
    """Linear skip + one GELU layer, on standardised inputs/outputs; fit sets ``net_``, ``best_epoch_``.

    Inputs and outputs are centred and divided by one scalar each (their RMS
    deviation per coordinate), so the learning rate does not depend on the
    residual scale, and the GELU sees pre-activations of order one.
    """

    kind = "mlp"

    def __init__(self, hidden: int = 512, epochs: int = 60, patience: int = 5, lr: float = 1e-3,
                 weight_decay: float = 1e-4, batch: int = 256, val_fraction: float = 0.15, seed: int = 0):
        self.hidden, self.epochs, self.patience, self.lr = hidden, epochs, patience, lr
        self.weight_decay, self.batch, self.val_fraction, self.seed = weight_decay, batch, val_fraction, seed

    def _standardise(self, X: np.ndarray, Y: np.ndarray) -> None:
        self.mx_, self.my_ = X.mean(0), Y.mean(0)
        self.sx_ = float(np.sqrt(((X - self.mx_) ** 2).mean())) or 1.0
        self.sy_ = float(np.sqrt(((Y - self.my_) ** 2).mean())) or 1.0

    def fit(self, X: np.ndarray, Y: np.ndarray, groups: Optional[np.ndarray] = None,
            init_linear: Optional[tuple[np.ndarray, np.ndarray]] = None, init_alpha: Optional[float] = None) -> "MLPMap":
        """Train with early stopping; the skip starts at ``init_linear=(W, b)`` (e.g. ridge's), or with
        ``init_alpha`` at ridge with that penalty fitted on this map's own training rows (not its
        validation rows, so early stopping compares the branch against an honest ridge)."""
        X, Y = check_pair(X, Y, min_n=4)
        self._standardise(X, Y)
        rng = np.random.default_rng(self.seed)
        perm = rng.permutation(X.shape[0])
        n_val = max(1, int(round(self.val_fraction * X.shape[0])))
        va, tr = perm[:n_val], perm[n_val:]
        Xs = torch.from_numpy((X - self.mx_) / self.sx_).float()
        Ys = torch.from_numpy((Y - self.my_) / self.sy_).float()
        torch.manual_seed(self.seed)
        self.net_ = _Net(X.shape[1], Y.shape[1], self.hidden)
        if init_alpha is not None:
            init_linear = _ridge_solve(X[tr], Y[tr], init_alpha)
        if init_linear is not None:
            W, b = init_linear
            with torch.no_grad():  # the same affine map, written in standardised units
                self.net_.skip.weight.copy_(torch.from_numpy(W.T * self.sx_ / self.sy_).float())
                self.net_.skip.bias.copy_(torch.from_numpy((self.mx_ @ W + b - self.my_) / self.sy_).float())
            self.net_.skip.requires_grad_(False)  # ridge is already the best affine map: learn what it misses
        opt = torch.optim.AdamW([p for p in self.net_.parameters() if p.requires_grad], lr=self.lr,
                                weight_decay=self.weight_decay)
        gen = torch.Generator().manual_seed(self.seed)

        def val_loss() -> float:
            with torch.no_grad():
                return float(torch.nn.functional.mse_loss(self.net_(Xs[va]), Ys[va]))

        best, best_state, self.best_epoch_, stall = val_loss(), self._state(), 0, 0
        tr_t = torch.from_numpy(tr)
        for epoch in range(1, self.epochs + 1):
            self.net_.train()
            for idx in tr_t[torch.randperm(len(tr_t), generator=gen)].split(self.batch):
                opt.zero_grad()
                torch.nn.functional.mse_loss(self.net_(Xs[idx]), Ys[idx]).backward()
                opt.step()
            self.net_.eval()
            loss = val_loss()
            if loss < best - 1e-6:
                best, best_state, self.best_epoch_, stall = loss, self._state(), epoch, 0
            else:
                stall += 1
                if stall >= self.patience:
                    break
        self.net_.load_state_dict(best_state)
        self.val_mse_ = best
        self.epochs_run_ = epoch if self.epochs else 0
        self._set_linear(Xs[tr])
        return self

    def _state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.net_.state_dict().items()}

    def _set_linear(self, Xs: torch.Tensor) -> None:
        self.W_lin_ = self._mean_jacobian(Xs)
        self.b_lin_ = self.my_ - self.mx_ @ self.W_lin_

    def _mean_jacobian(self, Xs: torch.Tensor) -> np.ndarray:
        """Mean Jacobian over standardised rows: skip + up diag(mean gelu'(h)) down, in raw units."""
        with torch.enable_grad():
            h = (Xs @ self.net_.up.weight.T + self.net_.up.bias).detach().requires_grad_(True)
            torch.nn.functional.gelu(h).sum().backward()
        g = h.grad.mean(0)
        J = self.net_.skip.weight.T + (self.net_.up.weight.T * g) @ self.net_.down.weight.T
        return J.detach().double().numpy() * (self.sy_ / self.sx_)

    def mean_jacobian(self, X: np.ndarray) -> np.ndarray:
        """``[d_in, d_out]`` mean over the rows of X of d transform(x) / dx (row-vector convention)."""
        return self._mean_jacobian(torch.from_numpy((np.asarray(X, np.float64) - self.mx_) / self.sx_).float())

    def transform(self, X: np.ndarray) -> np.ndarray:
        Xs = torch.from_numpy((np.asarray(X, np.float64) - self.mx_) / self.sx_).float()
        with torch.no_grad():
            return self.net_(Xs).double().numpy() * self.sy_ + self.my_

    def linear_part(self) -> tuple[np.ndarray, np.ndarray]:
        return self.W_lin_, self.b_lin_

    def _params(self) -> dict[str, Any]:
        return {"hidden": self.hidden, "epochs": self.epochs, "patience": self.patience, "lr": self.lr,
                "weight_decay": self.weight_decay, "batch": self.batch, "val_fraction": self.val_fraction,
                "seed": self.seed}

    def _tensors(self) -> dict[str, np.ndarray]:
        net = {f"net.{k}": v.double().numpy() for k, v in self.net_.state_dict().items()}
        return {**net, "mx": self.mx_, "my": self.my_, "W_lin": self.W_lin_, "b_lin": self.b_lin_}

    def _fitted(self) -> dict[str, Any]:
        return {"sx": self.sx_, "sy": self.sy_, "best_epoch": self.best_epoch_, "val_mse": self.val_mse_,
                "epochs_run": self.epochs_run_}

    def _restore(self, tensors: dict[str, np.ndarray], fitted: dict[str, Any]) -> None:
        self.mx_, self.my_, self.W_lin_, self.b_lin_ = tensors["mx"], tensors["my"], tensors["W_lin"], tensors["b_lin"]
        self.sx_, self.sy_ = float(fitted["sx"]), float(fitted["sy"])
        self.best_epoch_, self.val_mse_ = int(fitted["best_epoch"]), float(fitted["val_mse"])
        self.epochs_run_ = int(fitted["epochs_run"])
        self.net_ = _Net(self.mx_.shape[0], self.my_.shape[0], self.hidden)
        self.net_.load_state_dict({k[4:]: torch.from_numpy(v).float() for k, v in tensors.items() if k.startswith("net.")})
        self.net_.eval()
