"""The compact L-BFGS must follow torch's L-BFGS: same algorithm, different arithmetic for the direction."""

from __future__ import annotations

import pytest
import torch

from gradleak.attacks.lbfgs import CompactLBFGS


def _rosenbrock(x: torch.Tensor) -> torch.Tensor:
    return ((1 - x[:-1]) ** 2).sum() + 100 * ((x[1:] - x[:-1] ** 2) ** 2).sum()


@pytest.mark.parametrize("line_search", ["strong_wolfe", None])
def test_iterates_match_torch_lbfgs_through_history_wraparound(line_search: str | None) -> None:
    runs = []
    for cls in (torch.optim.LBFGS, CompactLBFGS):
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(40, generator=gen, dtype=torch.float64).requires_grad_(True)
        opt = cls([x], lr=1.0 if line_search else 0.05, history_size=6, line_search_fn=line_search, max_iter=15)

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = _rosenbrock(x)
            loss.backward()
            return loss

        for _ in range(4):  # 60 iterations with 6 pairs of history: the oldest pairs are dropped many times
            opt.step(closure)
        runs.append(x.detach().clone())
    assert not torch.equal(runs[0], torch.zeros(40))
    assert torch.allclose(runs[0], runs[1], rtol=1e-6, atol=1e-8)


def test_direction_equals_two_loop_recursion() -> None:
    gen = torch.Generator().manual_seed(1)
    n, m = 12, 5
    s = torch.randn(m, n, generator=gen, dtype=torch.float64)
    y = s + 0.1 * torch.randn(m, n, generator=gen, dtype=torch.float64)  # s.y > 0
    g = torch.randn(n, generator=gen, dtype=torch.float64)
    gamma = float(s[-1] @ y[-1] / (y[-1] @ y[-1]))
    # Nocedal & Wright, Algorithm 7.4.
    q, alphas = g.clone(), []
    for i in reversed(range(m)):
        a = (s[i] @ q) / (y[i] @ s[i])
        alphas.append(a)
        q -= a * y[i]
    r = gamma * q
    for i, a in zip(range(m), reversed(alphas)):
        b = (y[i] @ r) / (y[i] @ s[i])
        r += s[i] * (a - b)
    compact = CompactLBFGS.direction(g, s, y, s @ y.T, y @ y.T, gamma)
    assert torch.allclose(compact, r, rtol=1e-9, atol=1e-12)
