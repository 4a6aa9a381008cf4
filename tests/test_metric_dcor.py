import numpy as np
import pytest
from scipy.stats import ortho_group

from saematch.similarity.base import get_metric


def test_dcor_invariants_and_independence():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 6))
    m = get_metric("dcor")
    assert m.score(X, 2.5 * X @ ortho_group.rvs(6, random_state=1) + 3) == pytest.approx(1.0)
    indep = m.score(X, rng.standard_normal((200, 4)))
    assert indep < m.score(X, X[:, :3] + rng.standard_normal((200, 3))) < 1.0
    assert vars(m) == vars(get_metric("dcor"))  # pure
