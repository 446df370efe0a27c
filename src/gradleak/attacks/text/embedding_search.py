"""What TAG and LAMP share: search over continuous input embeddings of known length for a gradient match.

The attacker sees the update of a sequence classifier. Both attacks (Deng et al. 2021, TAG; Balunovic et al. 2022,
LAMP) optimise dummy input embeddings ``x`` (B, L, d), fed to the model in place of the word-embedding lookup, so
that the gradient ``g(x)`` of the client's loss on ``(x, y)`` matches the shared one ``g*``, and read tokens off
``x`` by nearest embedding. Here, as in LAMP:

- labels ``y`` come first, from the classifier bias (``labels.sequence_labels``) unless they leaked;
- the sequence lengths are known (LAMP's ``know_padding``; ``obs.info["lengths"]`` or the attack's ``lengths``),
  padding is fixed and masked, and the last position of each sequence holds the end-of-sequence token;
- the vocabulary is the token bag read off the word-embedding gradient (``token_bag``); by default the search
  variable is a softmax over the bag at every position and ``x`` the matching convex combination of the bag's
  embeddings (``space="bag"``), which keeps the search near tokens; ``space="free"`` is the papers' plain
  embedding, which on the small BERTs measured here matches the gradient far from any token;
- every candidate (restarts, initial draws, discrete moves, label orders) is scored in one batched call:
  ``torch.func.vmap`` of the per-candidate parameter gradient, so ``C`` candidates cost one forward/backward of
  ``C`` batches rather than ``C`` Python-level calls.

Distances between ``g`` and ``g*`` over the parameter tensors ``k`` whose shared gradient is not numerically zero
(BERT's key biases get none, as softmax ignores them):

- ``l2l1`` (TAG): ``sum_k ||g_k - g*_k||_2^2 + alpha ||g_k - g*_k||_1``;
- ``cos`` (LAMP): ``mean_k 1 - <g_k, g*_k> / (||g_k|| ||g*_k||)``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from gradleak.attacks.text.labels import sequence_labels
from gradleak.attacks.text.token_bag import token_bag
from gradleak.errors import ConfigError
from gradleak.inputs import TokenInput
from gradleak.observation import Observation
from gradleak.text.tokenizer import tokenizer_named

Distance = Literal["l2l1", "cos"]
Space = Literal["free", "bag"]


@dataclass
class TextProblem:
    """Everything the search needs, read from the observation only (never from the truth)."""

    model: nn.Module
    params: dict[str, torch.Tensor]
    target: dict[str, torch.Tensor]
    labels: torch.Tensor  # (B,) a multiset: which row holds which label is searched
    lengths: list[int]
    mask: torch.Tensor  # (B, L) 1 on real positions
    vocab: torch.Tensor  # (K,) token ids the search may use (the bag)
    embeddings: torch.Tensor  # (V, d) the word-embedding matrix
    pad_id: int
    eos_id: int | None

    @property
    def batch(self) -> int:
        return int(self.mask.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.mask.shape[1])

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def embedding_norm(self) -> float:
        """Mean L2 norm of the bag's embeddings (LAMP's ``init_size``: 1.4 for BERT base)."""
        return float(self.embeddings[self.vocab].norm(dim=1).mean())


def _word_embedding_name(model: nn.Module) -> str:
    weight = model.get_input_embeddings().weight
    for name, p in model.named_parameters():
        if p is weight:
            return name
    raise ConfigError("the model's input embedding is not one of its parameters")


def _tokenizer_eos(obs: Observation) -> int | None:
    """The end-of-sequence id of the observation's tokenizer, when it is one of ours (named in the capture)."""
    tok, _ = tokenizer_named(getattr(obs.inputs, "tokenizer", None))
    return None if tok is None else tok.eos_id


def text_problem(obs: Observation, lengths: list[int] | tuple[int, ...] | None = None,
                 rtol: float = 1e-6) -> TextProblem:
    """Set up the search from ``obs``: model, target gradients, labels, lengths, mask and vocabulary."""
    inputs = obs.inputs
    if not isinstance(inputs, TokenInput):
        raise ConfigError("embedding search needs token inputs")
    if obs.task.kind != "classification":
        raise ConfigError("TAG/LAMP here attack sequence classification (an encoder with a classifier head)")
    model = obs.build_model("cpu")
    if getattr(model.config, "_attn_implementation", None) is not None:
        model.config._attn_implementation = "eager"  # vmap-safe attention; same numbers
    word = _word_embedding_name(model)
    update = obs.gradient_estimate()
    norms = {n: float(v.float().norm()) for n, v in update.items()}
    top = max(norms.values())
    target = {n: update[n].detach().float() for n, _ in model.named_parameters()
              if n in update and n != word and norms[n] > rtol * top}
    params = {n: p.detach() for n, p in model.named_parameters()}
    if obs.labels is not None:
        labels = obs.labels.long().clone()
    else:
        labels = sequence_labels(obs)
    B, L = obs.batch_size, inputs.seq_len
    given = lengths if lengths is not None else obs.info.get("lengths")
    if given is None:
        if B > 1:
            # without them every sequence is taken as full length (the longest one always is)
            given = [L] * B
        else:
            given = [L]
    given = [int(n) for n in given]
    if len(given) != B or min(given) < 1 or max(given) > L:
        raise ConfigError(f"lengths must be {B} integers in [1, {L}], got {given}")
    mask = torch.zeros(B, L, dtype=torch.long)
    for b, n in enumerate(given):
        mask[b, :n] = 1
    pad = inputs.pad_token_id if inputs.pad_token_id is not None else 0
    bag = sorted(token_bag(obs) - {pad})
    if not bag:
        raise ConfigError("the token bag is empty: the update holds no word-embedding gradient to read it from")
    embeddings = model.get_input_embeddings().weight.detach()
    eos = _tokenizer_eos(obs)
    if eos is not None and eos not in bag:
        eos = None
    return TextProblem(model, params, target, labels, given, mask, torch.tensor(bag), embeddings, pad, eos)


def label_orders(labels: torch.Tensor, limit: int) -> torch.Tensor:
    """Up to ``limit`` distinct assignments of the label multiset to rows ``(R, B)``, sorted order first."""
    base = sorted(labels.tolist())
    seen: list[tuple[int, ...]] = []
    for perm in itertools.permutations(base):
        if perm not in seen:
            seen.append(perm)
            if len(seen) >= limit:
                break
    return torch.tensor(seen, dtype=torch.long)


def candidate_gradients(problem: TextProblem, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Parameter gradients of the client's loss for each candidate: ``x`` (C, B, L, d), ``labels`` (C, B);
    returns ``{name: (C, *shape)}``, differentiable in ``x``."""
    from torch.func import functional_call, grad, vmap

    names = list(problem.target)
    fixed = {n: p for n, p in problem.params.items() if n not in problem.target}
    model, mask = problem.model, problem.mask

    def loss(trainable: dict[str, torch.Tensor], xe: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, {**fixed, **trainable}, (), {"inputs_embeds": xe, "attention_mask": mask})
        return F.cross_entropy(out.logits, y)

    trainable = {n: problem.params[n] for n in names}
    return vmap(grad(loss), in_dims=(None, 0, 0))(trainable, x, labels)


def gradient_distance(problem: TextProblem, grads: dict[str, torch.Tensor], kind: Distance,
                      alpha: float = 0.01) -> torch.Tensor:
    """Distance ``(C,)`` of each candidate's gradient to the shared one (see the module docstring)."""
    total = None
    for name, t in problem.target.items():
        g = grads[name].flatten(1)
        t = t.flatten()[None]
        if kind == "l2l1":
            diff = g - t
            term = diff.square().sum(1) + alpha * diff.abs().sum(1)
        elif kind == "cos":
            term = 1.0 - (g * t).sum(1) / (g.norm(dim=1) * t.norm(dim=1)).clamp_min(1e-30)
        else:
            raise ConfigError(f"distance must be 'l2l1' or 'cos', got {kind!r}")
        total = term if total is None else total + term
    assert total is not None
    return total / len(problem.target) if kind == "cos" else total


def known_positions(problem: TextProblem) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the tokens are known (padding, and the end-of-sequence token last) ``(B, L)`` and their
    embeddings ``(B, L, d)``."""
    known = torch.zeros(problem.batch, problem.seq_len, dtype=torch.bool)
    values = torch.zeros(problem.batch, problem.seq_len, problem.dim)
    for b, n in enumerate(problem.lengths):
        known[b, n:] = True
        values[b, n:] = problem.embeddings[problem.pad_id]
        if problem.eos_id is not None:
            known[b, n - 1] = True
            values[b, n - 1] = problem.embeddings[problem.eos_id]
    return known, values


def to_embeddings(problem: TextProblem, var: torch.Tensor, space: Space) -> torch.Tensor:
    """Input embeddings (…, B, L, d) of the search variable: itself (``free``, as in TAG and LAMP) or, for
    ``bag``, ``softmax(z) @ E_bag``, a convex combination of the bag's embeddings at every position; the known
    positions are written in either way (differentiably)."""
    if space == "free":
        x = var
    elif space == "bag":
        x = torch.softmax(var, dim=-1) @ problem.embeddings[problem.vocab]
    else:
        raise ConfigError(f"space must be 'free' or 'bag', got {space!r}")
    known, values = known_positions(problem)
    return torch.where(known[..., None], values, x)


def project(problem: TextProblem, x: torch.Tensor) -> torch.Tensor:
    """Nearest bag token by cosine at every position (LAMP's projection); ``x`` (…, B, L, d) -> ids (…, B, L),
    with padding and the fixed end token written in."""
    bag = problem.embeddings[problem.vocab]
    sim = F.normalize(x.detach(), dim=-1) @ F.normalize(bag, dim=-1).T
    ids = problem.vocab[sim.argmax(-1)]
    for b, n in enumerate(problem.lengths):
        ids[..., b, n:] = problem.pad_id
        if problem.eos_id is not None:
            ids[..., b, n - 1] = problem.eos_id
    return ids


def random_start(problem: TextProblem, count: int, generator: torch.Generator, space: Space) -> torch.Tensor:
    """``count`` starts of the search variable: Gaussian embeddings scaled to the bag's mean embedding norm
    (``free``), or small Gaussian logits over the bag (``bag``, a near-uniform mixture)."""
    B, L = problem.batch, problem.seq_len
    if space == "bag":
        return 0.01 * torch.randn(count, B, L, int(problem.vocab.numel()), generator=generator)
    x = torch.randn(count, B, L, problem.dim, generator=generator)
    return F.normalize(x, dim=-1) * problem.embedding_norm()


def embed(problem: TextProblem, ids: torch.Tensor) -> torch.Tensor:
    """The model's own input embeddings of token ids (…, B, L) -> (…, B, L, d)."""
    return problem.embeddings[ids]


def optimise(problem: TextProblem, var0: torch.Tensor, labels: torch.Tensor, *, steps: int, lr: float,
             kind: Distance, space: Space, alpha: float = 0.01, reg: float = 0.0, decay: float = 1.0,
             decay_every: int = 50, hook: Callable[[int, torch.Tensor, torch.Tensor],
                                                   tuple[torch.Tensor, torch.Tensor]] | None = None,
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[float]]:
    """Adam on the search variable of ``R`` restarts at once (``var0`` (R, B, L, ·), ``labels`` (R, B)):
    ``distance(g(x), g*) + reg (mean_p ||x_p|| / init_size - 1)^2`` with ``x = to_embeddings(var)`` (LAMP's
    embedding-norm regulariser, made relative to the bag's mean norm ``init_size`` so one coefficient fits any
    embedding scale; off for TAG), lr multiplied by ``decay`` every ``decay_every`` steps (LAMP's StepLR).
    ``hook(step, var, labels)`` may replace both (LAMP's discrete moves). Returns the embeddings with the lowest
    objective seen per restart (R, B, L, d), their labels, that objective (R,) and the trace of the best."""
    var = var0.clone().requires_grad_(True)
    opt = torch.optim.Adam([var], lr=lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=decay_every, gamma=decay)
    init_size = problem.embedding_norm()
    real = problem.mask.bool()
    best_x = to_embeddings(problem, var0, space).detach().clone()
    best_labels = labels.clone()
    best = torch.full((var0.shape[0],), float("inf"))
    trace: list[float] = []
    for step in range(steps):
        opt.zero_grad()
        x = to_embeddings(problem, var, space)
        dist = gradient_distance(problem, candidate_gradients(problem, x, labels), kind, alpha)
        objective = dist
        if reg:
            norms = x.norm(dim=-1)[:, real].mean(dim=1)
            objective = dist + reg * (norms / init_size - 1.0).square()
        objective.sum().backward()
        with torch.no_grad():
            value = objective.detach()
            better = value < best
            best_x[better] = x.detach()[better]
            best_labels[better] = labels[better]
            best = torch.where(better, value, best)
            trace.append(float(value.min()))
        opt.step()
        sched.step()
        if hook is not None:
            with torch.no_grad():
                new_var, labels = hook(step, var.detach(), labels)
                var.data.copy_(new_var)
    return best_x, best_labels, best, trace


def final_choice(problem: TextProblem, x: torch.Tensor, labels: torch.Tensor, kind: Distance,
                 alpha: float = 0.01) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]:
    """Project every restart to tokens and keep the one whose token embeddings match the gradient best.
    Returns ids (B, L), labels (B,), the restart index and the projected distances (R,)."""
    ids = project(problem, x)
    with torch.no_grad():
        dist = gradient_distance(problem, candidate_gradients(problem, embed(problem, ids), labels), kind, alpha)
    r = int(dist.argmin())
    return ids[r], labels[r], r, dist
