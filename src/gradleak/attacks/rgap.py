"""R-GAP, the recursive gradient attack (Zhu & Blaschko, 2021): closed-form inversion, layer by layer.

For a chain of bias-free layers ``o_l = W_l a_{l-1}``, ``a_l = act(o_l)`` with an invertible activation
(LeakyReLU), one sample's update gives, per layer, two sets of equations that are *linear* in the layer's input
``a_{l-1}`` once everything above it is known:

- forward: ``conv_l(a_{l-1}) = o_l = act^{-1}(a_l)``;
- gradient: ``dL/dW_l = sum_positions delta_l * patches(a_{l-1})``, with ``delta_l = dL/do_l`` known from the
  layer above (``delta_l = (W_{l+1}^T delta_{l+1}) * act'(o_l)``).

The recursion starts at the linear head. Without a bias its gradient ``(dL/dz) h^T`` is rank one: ``h`` is known
up to a scalar ``t``, which the softmax cross-entropy pins down (``softmax(t W b) - e_y = a / t``, solved as a
one-dimensional problem; the paper does the same for its logistic head). With a bias, ``h`` is the exact ratio
of the analytic attack. Then every convolution is solved as a least-squares system, down to the image.

Rank condition (the paper's rank analysis): a layer is uniquely solvable when the stacked system has full
column rank, ``rank == unknowns`` (``C_in * H * W``); ``details["layers"]`` reports the number of unknowns,
of forward and gradient equations, and the numerical rank. Each convolution's equations are assembled as
normal equations from the convolution and its adjoint applied to a basis; per input channel the gradient
equations share one small matrix. Solved in float64 by Cholesky, falling back to minimum-norm least squares
when the system is rank deficient (rank by pivoted Cholesky). Batch size 1 only.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from gradleak.attacks.analytic import assemble, to_pixels
from gradleak.attacks.base import ATTACKS, Attack, Callback, Reconstruction
from gradleak.attacks.rank import RankDecision, decide_rank, surface
from gradleak.errors import ConfigError
from gradleak.observation import Observation


#: Relative pivot threshold of the numerical rank, on Gram matrices (singular values below ~1e-3 of the
#: largest count as zero): the observed update is float32, so finer distinctions are noise. Also the ``rcond``
#: of the minimum-norm solve. Far above the float32 floor (1e-7 on singular values, 1e-14 on the Gram), so the
#: decision does not turn on the last bits; ``rank.decide_rank`` reports how far the cut's pivots stand from it
#: (``rank_decision`` in each layer's report) and says a cut that falls in no gap.
RANK_RTOL = 1e-6


@dataclass(frozen=True)
class _Layer:
    name: str  # module name; its weight is ``name + ".weight"``
    module: nn.Module  # Conv2d or Linear, without bias (Linear head may have one)
    slope: float  # LeakyReLU negative slope after it; 1.0 for identity
    in_shape: tuple[int, ...]  # input shape without the batch dimension
    out_shape: tuple[int, ...]  # output shape without the batch dimension


def chain(model: nn.Module, input_shape: tuple[int, int, int]) -> list[_Layer]:
    """The model as a chain of (bias-free Conv2d | Linear, LeakyReLU | Identity); raises ``ConfigError`` when it
    is not one, or when the chain does not reproduce the model's output."""
    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    layers: list[tuple[str, nn.Module, float]] = []
    for name, m in leaves:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if isinstance(m, nn.Conv2d) and (m.bias is not None or m.groups != 1 or m.dilation != (1, 1)):
                raise ConfigError(f"R-GAP needs plain bias-free convolutions; {name!r} is {m}")
            layers.append((name, m, 1.0))
        elif isinstance(m, nn.LeakyReLU) and layers and layers[-1][2] == 1.0:
            layers[-1] = (layers[-1][0], layers[-1][1], float(m.negative_slope))
        elif isinstance(m, (nn.Identity, nn.Flatten)):
            continue
        else:
            raise ConfigError(
                f"R-GAP needs a chain of bias-free Conv2d/Linear layers with LeakyReLU; {name!r} is {type(m).__name__}"
            )
    if not layers or not isinstance(layers[-1][1], nn.Linear):
        raise ConfigError("R-GAP needs the model to end in a linear layer")
    if any(isinstance(m, nn.Linear) for _, m, _ in layers[:-1]):
        raise ConfigError("R-GAP here supports convolutions followed by one linear head")
    if layers[-1][2] != 1.0:
        raise ConfigError("R-GAP needs the linear head's output to be the logits (no activation after it)")
    out: list[_Layer] = []
    model64 = model.double()
    x = torch.randn(1, *input_shape, dtype=torch.float64, device=next(model.parameters()).device)
    with torch.no_grad():
        for name, m, slope in layers:
            if isinstance(m, nn.Linear):
                x = x.flatten(1)
            in_shape = tuple(x.shape[1:])
            x = m(x)
            out.append(_Layer(name, m, slope, in_shape, tuple(x.shape[1:])))
            if slope != 1.0:
                x = F.leaky_relu(x, slope)
        probe = torch.randn_like(torch.empty(1, *input_shape, dtype=torch.float64, device=x.device))
        if not torch.allclose(_run(out, probe), model64(probe), rtol=1e-9, atol=1e-12):
            raise ConfigError("the model is not the plain chain of its layers; R-GAP cannot invert it")
    return out


def _run(layers: list[_Layer], x: torch.Tensor) -> torch.Tensor:
    for layer in layers:
        if isinstance(layer.module, nn.Linear):
            x = x.flatten(1)
        x = layer.module(x)
        if layer.slope != 1.0:
            x = F.leaky_relu(x, layer.slope)
    return x


def _inverse_leaky(a: torch.Tensor, slope: float) -> torch.Tensor:
    return torch.where(a >= 0, a, a / slope)


def invert_head(
    weight: torch.Tensor, w_grad: torch.Tensor, b_grad: torch.Tensor | None, label: int | None
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Input ``h`` of the linear head and the logit gradient ``dL/dz`` from the head's gradient (float64)."""
    if b_grad is not None and b_grad.abs().max() > 0:
        g = b_grad.double()
        h = (g @ w_grad.double()) / (g @ g)
        return h, g, {"head": "bias ratio"}
    u_, s_, vh = torch.linalg.svd(w_grad.double(), full_matrices=False)
    a, b = u_[:, 0] * s_[0], vh[0]  # w_grad = a b^T; h = t b and dL/dz = a / t for an unknown scalar t
    u = weight.double() @ b  # logits are t * u
    k = u.numel()

    def residual(log_t: torch.Tensor, sign: float, y: int) -> torch.Tensor:
        t = sign * torch.exp(log_t)[:, None]
        target = torch.softmax(t * u, dim=1)
        target[:, y] -= 1.0
        return ((target - a / t).norm(dim=1) / (a / t).norm(dim=1)).nan_to_num(float("inf"))

    grid = torch.linspace(-15.0, 15.0, 601, dtype=torch.float64, device=a.device)
    best: tuple[float, float, float, int] = (math.inf, 0.0, 1.0, 0)
    for sign in (1.0, -1.0):
        # dL/dz = softmax - onehot is negative only at the label: the label is where a / t is negative.
        y = int(torch.argmin(sign * a)) if label is None else label
        r = residual(grid, sign, y)
        i = int(r.argmin())
        lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
        for _ in range(50):  # golden-section refinement of log|t| around the best grid point
            m1, m2 = lo + 0.382 * (hi - lo), lo + 0.618 * (hi - lo)
            r1, r2 = residual(torch.stack([m1, m2]), sign, y)
            lo, hi = (lo, m2) if r1 < r2 else (m1, hi)
        log_t = (lo + hi) / 2
        value = float(residual(log_t.view(1), sign, y))
        if value < best[0]:
            best = (value, float(log_t), sign, y)
    value, log_t, sign, y = best
    t = sign * math.exp(log_t)
    return t * b, a / t, {"head": "rank-one softmax fit", "head_residual": value, "label": y, "classes": k}


def _gradient_matrix(conv: nn.Conv2d, in_shape: tuple[int, ...], delta: torch.Tensor) -> torch.Tensor:
    """The matrix ``(C_out*k*k, H*W)`` mapping one input channel to its slice of the weight gradient: entry
    ``(o, i, j), p`` is the sum of ``delta[o]`` over the output positions whose kernel tap ``(i, j)`` reads ``p``."""
    _, h, w = in_shape
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    c_out, ho, wo = delta.shape
    m = delta.new_zeros(c_out, kh, kw, h + 2 * ph, w + 2 * pw)
    for i in range(kh):
        for j in range(kw):
            m[:, i, j, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw] = delta
    return m[..., ph : ph + h, pw : pw + w].reshape(c_out * kh * kw, h * w)


def _factor(gram: torch.Tensor, rtol: float) -> tuple[torch.Tensor | None, RankDecision, float]:
    """Cholesky factor of a Gram matrix when it has full numerical rank (else ``None``), the rank decision, and a
    condition estimate of the underlying system (ratio of the extreme pivots). The rank comes from LAPACK's
    pivoted Cholesky (``pstrf``) when plain Cholesky shows the matrix is (nearly) singular; the squared pivots,
    which a pivoted Cholesky sorts and which track the Gram's eigenvalues, go through ``rank.decide_rank`` with
    the explicit tolerance ``rtol`` (relative to the largest diagonal entry), which reports the cut's gap."""
    top = float(gram.diagonal().max())
    lower, info = torch.linalg.cholesky_ex(gram)
    diag = lower.diagonal().abs()
    if int(info) == 0 and float(diag.min() ** 2) > rtol * top:
        squares = torch.sort(diag.double() ** 2, descending=True).values
        return lower, _decision(squares, top, rtol), float(diag.max() / diag.min())
    from scipy.linalg import lapack  # only when the system is rank deficient

    factor, _, rank, status = lapack.dpstrf(gram.cpu().numpy(), lower=1, tol=rtol * top)
    if status < 0:
        raise ConfigError(f"pivoted Cholesky failed (LAPACK info {status})")
    pivots = torch.from_numpy(abs(factor.diagonal()[: max(rank, 1)]).copy())
    decision = _decision(pivots.double() ** 2, top, rtol)
    return None, dataclasses.replace(decision, rank=int(rank)), float(pivots.max() / pivots.min().clamp_min(1e-300))


def _decision(squares: torch.Tensor, top: float, rtol: float) -> RankDecision:
    """The decision on squared pivots (descending) at ``rtol`` times ``top``: the pivots a pivoted Cholesky stops
    at are not computed, so the gap at the cut is the last kept pivot over the tolerance."""
    scale = float(squares[0]) if squares.numel() and float(squares[0]) > 0 else 1.0
    return decide_rank(squares, 0.0, rtol=rtol * top / scale)


def solve_conv(
    conv: nn.Conv2d, in_shape: tuple[int, ...], out_pre: torch.Tensor, delta: torch.Tensor, w_grad: torch.Tensor
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The input of ``conv`` from its pre-activation output and its weight gradient (one R-GAP step).

    Unknowns ``x`` (``C_in*H*W``). Forward equations ``conv(x) = o`` (matrix ``A``, never formed: ``A^T A`` is
    the convolution's adjoint applied to the convolution of a basis). Gradient equations: per input channel
    ``M x_c = g_c`` with one shared ``M``. Both blocks are scaled to unit Frobenius norm and solved through the
    normal equations ``(A^T A + I (x) M^T M) x = A^T o + vec(M^T g_c)``.
    """
    c_in, h, w = in_shape
    c_out = out_pre.shape[0]
    n = c_in * h * w
    kk = conv.kernel_size[0] * conv.kernel_size[1]
    weight = conv.weight.detach()
    stride, padding = conv.stride, conv.padding
    # A^T A column by column: the convolution's adjoint applied to the convolution of each basis image. Run in
    # float32 (the observed update is float32 too), accumulated into a float64 system.
    basis = torch.eye(n, dtype=torch.float32, device=delta.device).view(n, c_in, h, w)
    w32 = weight.float()
    ata = torch.nn.grad.conv2d_input(basis.shape, w32, F.conv2d(basis, w32, stride=stride, padding=padding),
                                     stride=stride, padding=padding).reshape(n, n).double()
    ata = (ata + ata.T) / 2
    del basis
    weight = weight.double()
    ato = torch.nn.grad.conv2d_input((1, *in_shape), weight, out_pre[None], stride=stride, padding=padding).reshape(n)
    m = _gradient_matrix(conv, in_shape, delta)
    g = w_grad.double().reshape(c_out, c_in, kk).permute(1, 0, 2).reshape(c_in, -1)  # rhs per input channel
    sf = 1.0 / ata.trace().clamp_min(1e-300)  # ||A||_F^2 = trace(A^T A)
    sg = 1.0 / (m * m).sum().clamp_min(1e-300)
    mtm = m.T @ m
    normal = ata * sf + torch.block_diag(*([mtm * sg] * c_in))
    rhs = ato * sf + ((g @ m) * sg).reshape(-1)
    lower, decision, condition = _factor(normal, RANK_RTOL)
    rank = decision.rank
    if lower is not None:
        x = torch.cholesky_solve(rhs[:, None], lower)[:, 0]
    else:  # rank deficient: the minimum-norm least-squares solution, as R-GAP does
        x = torch.linalg.lstsq(normal.cpu(), rhs.cpu()[:, None], rcond=RANK_RTOL, driver="gelsd").solution[:, 0].to(rhs)
    x = x.reshape(in_shape)
    predicted = F.conv2d(x[None], weight, stride=stride, padding=padding)[0]
    report = {
        "unknowns": n,
        "forward_equations": int(out_pre.numel()),
        "gradient_equations": int(m.shape[0]) * c_in,
        "gradient_rank": _factor(mtm, RANK_RTOL)[1].rank * c_in,
        "rank": rank,
        "rank_decision": decision.details(),
        "solvable": rank == n,
        "condition_estimate": condition,
        "forward_residual": float((predicted - out_pre).norm() / out_pre.norm().clamp_min(1e-300)),
        "gradient_residual": float((x.reshape(c_in, -1) @ m.T - g).norm() / g.norm().clamp_min(1e-300)),
    }
    return x, report


@dataclass
class RGAP(Attack):
    """Recursive Gradient Attack on Privacy: exact layer-wise inversion of a bias-free LeakyReLU CNN (batch 1).

    ``labels``: 'auto' uses leaked labels when present, else the label the head's fit finds.
    """

    name: ClassVar[str] = "rgap"
    labels: str = "auto"

    def reconstruct(
        self,
        obs: Observation,
        *,
        device: torch.device | str = "cpu",
        seed: int | None = None,
        callback: Callback | None = None,
        progress: bool = False,
    ) -> Reconstruction:
        del seed, progress  # closed form
        start = time.perf_counter()
        if obs.batch_size != 1:
            raise ConfigError(f"R-GAP inverts one sample's gradient; the observation has batch size {obs.batch_size}")
        if self.labels not in ("auto", "infer", "leaked"):
            raise ConfigError(f"labels must be 'auto', 'infer' or 'leaked', got {self.labels!r}")
        if self.labels == "leaked" and obs.labels is None:
            raise ConfigError("labels='leaked' but the observation carries no labels")
        label = int(obs.labels[0]) if obs.labels is not None and self.labels != "infer" else None
        model = obs.build_model(device).double()
        layers = chain(model, obs.input_shape)
        grads = obs.gradient_estimate()
        for layer in layers:
            if f"{layer.name}.weight" not in grads:
                key = f"{layer.name}.weight"
                raise ConfigError(f"the update withholds {key!r}: R-GAP needs every layer's gradient")
        head = layers[-1]
        bias_key = f"{head.name}.bias"
        h, dz, head_info = invert_head(
            head.module.weight.detach(), grads[f"{head.name}.weight"].to(device),
            grads[bias_key].to(device) if bias_key in grads else None, label,
        )
        activation = h.reshape(head.in_shape)
        upstream = head.module.weight.detach().double().T @ dz  # dL/d(activation)
        upstream = upstream.reshape(head.in_shape)
        reports: list[dict[str, Any]] = []
        for layer in reversed(layers[:-1]):
            activation, upstream = activation.reshape(layer.out_shape), upstream.reshape(layer.out_shape)
            pre = _inverse_leaky(activation, layer.slope) if layer.slope != 1.0 else activation
            delta = upstream * torch.where(pre >= 0, 1.0, layer.slope) if layer.slope != 1.0 else upstream
            x, report = solve_conv(layer.module, layer.in_shape, pre, delta, grads[f"{layer.name}.weight"].to(device))
            reports.insert(0, {"layer": layer.name, **report})
            x_var = x[None].clone().requires_grad_(True)
            (upstream,) = torch.autograd.grad(layer.module(x_var), x_var, delta[None])
            upstream, activation = upstream[0], x
        images, recovered = assemble(obs, [to_pixels(obs, activation[None])])
        if callback is not None:
            callback(0, images[None])
        label_out = torch.tensor([int(torch.argmin(dz))]).long()
        details = {"recovered": recovered, **head_info, "layers": reports,
                   "solvable": all(r["solvable"] for r in reports),
                   "rank_decision": {r["layer"]: r["rank_decision"] for r in reports}}
        surface(details, "rgap")
        return Reconstruction(
            inputs=images, labels=label_out, attack=self.name, settings=self.settings(), iterations=1,
            wall_time_s=time.perf_counter() - start, details=details,
        )


ATTACKS.register("rgap")(RGAP)
