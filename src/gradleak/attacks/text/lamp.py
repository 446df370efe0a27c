"""LAMP (Balunovic et al. 2022, "LAMP: Extracting Text from Gradients with Language Model Priors").

Continuous optimisation of the input embeddings (known lengths), alternated with discrete moves:

- continuous: Adam on ``1 - cos(g(x), g*)`` averaged over parameter tensors (LAMP_Cos; ``loss="l2l1"`` gives
  LAMP_L1+L2 with TAG's distance), learning rate decayed by 0.89 every 50 steps, plus (``space="free"`` only)
  ``reg (mean ||x_p|| / init_size - 1)^2``, the embedding-norm regulariser that keeps vectors at the embeddings'
  scale;
- search space: by default (``space="bag"``) convex combinations of the bag's embeddings (softmax logits at
  every position), as for TAG here; ``space="free"`` is the paper's unconstrained embedding. In the bag space the
  norm is bounded by construction and the regulariser, which there only favours the largest-norm tokens, is off;
- initialisation: the best of ``init_candidates`` random starts by gradient distance, then the best of as many
  random orders of it;
- discrete, every ``swap_every`` steps after a burn-in: for each sequence, ``candidates`` transformations of its
  current tokens (swap two tokens, move a token, move a span, move a prefix to the end) are scored by
  ``distance + coeff_perplexity * NLL`` under a language-model prior, and the best one (or none) is applied to
  the search variable; with batch > 1 the label-to-row assignment is also searched here (LAMP knows the labels;
  we infer the multiset from the classifier bias);
- the prior is a small GPT-2 (``gpt2-tiny``) trained here on *other* records with the same tokenizer
  (``gradleak.text.models.pretrain``, cached); it stands in for the paper's GPT-2 trained on WikiText-103.

Defaults are the paper's LAMP_Cos settings from its reference code (2000 steps, coefficients 1 and 0.2, 500
initial candidates, 200 moves every 75 steps after 10 %, lr 0.01 at BERT base's embedding norm 1.4, i.e.
``lr_free=0.007`` in units of the bag's mean norm); the bag space's rate (0.1 on the logits) is ours. Every
candidate set is scored in one batched call (``torch.func.vmap``).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from gradleak.attacks.base import ATTACKS, Attack, Callback, Reconstruction
from gradleak.attacks.text.embedding_search import (Distance, Space, TextProblem, candidate_gradients,
                                                    final_choice, gradient_distance, label_orders, optimise,
                                                    project, random_start, text_problem, to_embeddings)
from gradleak.errors import ConfigError
from gradleak.observation import Observation
from gradleak.text.corpus import private_records
from gradleak.text.models import pretrain, text_model_spec
from gradleak.text.tokenizer import load_tokenizer, user_tokenizer
from gradleak.text.victim import encode_records

_PRIORS: dict[tuple[str, int, int], nn.Module] = {}


def language_prior(tokenizer_name: str, vocab_size: int, steps: int = 300, seed: int = 0,
                   lr: float = 3e-3, tokenizer: Any = None) -> nn.Module | None:
    """A ``gpt2-tiny`` causal LM over the observation's tokenizer, trained ``steps`` AdamW steps (rate ``lr``) on
    512 bundled records drawn with another seed than any victim's (public text of the same kind; cached on disk).

    ``tokenizer``: the user's own tokenizer object (anything with ``encode(text) -> ids``, e.g. a ``transformers``
    or ``tokenizers`` one) when the capture's is not gradleak's: the prior is then trained on the same public
    records encoded with it. ``None`` is returned when the tokenizer is neither gradleak's nor given (the caller
    runs without a prior and says so)."""
    key = (tokenizer_name, vocab_size, steps, id(tokenizer) if tokenizer is not None else 0)
    if key in _PRIORS:
        return _PRIORS[key]

    if tokenizer is not None:
        tok = user_tokenizer(tokenizer, vocab_size)
    else:
        tok = load_tokenizer("bpe", vocab_size)
        if tok.name != tokenizer_name:
            return None
    spec = text_model_spec("gpt2-tiny", tok.vocab_size, tok.pad_id, eos_id=tok.eos_id)
    data = encode_records(tok, private_records(512, seed=4242))[:, :128]  # gpt2-tiny's 128 positions
    gen = torch.Generator().manual_seed(seed)
    suffix = "" if tokenizer is None else "-" + hashlib.sha256(data.numpy().tobytes()).hexdigest()[:16]
    weights = pretrain(spec, lambda step: data[torch.randint(0, len(data), (16,), generator=gen)], steps=steps,
                       lr=lr, seed=seed, key=f"lamp-prior-records-512-4242-{tok.name}{suffix}")
    model = spec.build()
    model.load_state_dict(weights)
    model.eval()
    _PRIORS[key] = model
    return model


def sequence_nll(prior: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token negative log-likelihood per batch ``ids`` (C, B, L) under ``prior``, averaged over the
    real tokens of each sequence and then over the batch: (C,)."""
    C, B, L = ids.shape
    flat = ids.reshape(C * B, L)
    m = mask.expand(C, B, L).reshape(C * B, L).float()
    with torch.no_grad():
        logits = prior(input_ids=flat, attention_mask=m.long()).logits[:, :-1].float()
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), flat[:, 1:].reshape(-1), reduction="none")
    nll = nll.view(C * B, L - 1) * m[:, 1:]
    per_seq = nll.sum(1) / m[:, 1:].sum(1).clamp_min(1.0)
    return per_seq.view(C, B).mean(1)


def _moves(n: int, L: int, count: int, gen: torch.Generator) -> torch.Tensor:
    """``count`` position orders (count, L) of a sequence whose first ``n`` positions may move: the identity,
    then LAMP's four transformations in turn (swap two, move one, move a span, prefix to the end)."""
    out = torch.arange(L).repeat(count, 1)
    if n < 2:
        return out
    for k in range(1, count):
        perm = list(range(n))
        kind = k % 4

        def r(hi: int) -> int:
            return int(torch.randint(0, hi, (1,), generator=gen))

        if kind == 0:
            i, j = r(n), r(n)
            perm[i], perm[j] = perm[j], perm[i]
        elif kind == 1:
            i, j = r(n), r(n)
            token = perm.pop(i)
            perm.insert(j, token)
        elif kind == 2:
            b, e = sorted((r(n), r(n)))
            span, rest = perm[b:e + 1], perm[:b] + perm[e + 1:]
            p = r(len(rest) + 1)
            perm = rest[:p] + span + rest[p:]
        else:
            i = 1 + r(n - 1)
            perm = perm[i:] + perm[:i]
        out[k, :n] = torch.tensor(perm)
    return out


@dataclass
class LAMP(Attack):
    """LAMP: cosine (or L2+L1) gradient matching with an embedding-norm prior, alternated with discrete token
    moves scored by gradient distance plus a language model's perplexity (Balunovic et al. 2022).

    ``space``/``lr``/``lr_free`` as for TAG (``lr_free`` in units of the bag's mean embedding norm: the paper's 0.01
    at 1.4 -> 0.007); ``lengths`` as for TAG."""

    name: ClassVar[str] = "lamp"
    input_kinds: ClassVar[frozenset[str]] = frozenset({"tokens"})
    tasks: ClassVar[frozenset[str]] = frozenset({"classification"})
    loss: Distance = "cos"
    steps: int = 2000
    space: Space = "bag"
    lr: float = 0.1
    lr_free: float = 0.007
    lr_decay: float = 0.89
    coeff_reg: float = 1.0
    coeff_perplexity: float = 0.2
    alpha: float = 0.01
    init_candidates: int = 500
    candidates: int = 200
    swap_every: int = 75
    swap_burnin: float = 0.1
    prior_steps: int = 300
    lengths: tuple[int, ...] | None = None
    #: the user's tokenizer object (``encode(text) -> ids``) when the capture's is not gradleak's: the prior is
    #: trained for it; or ``prior``: the user's own causal LM over the same vocabulary (``input_ids -> logits``)
    tokenizer: Any = field(default=None, repr=False)
    prior: Any = field(default=None, repr=False)

    def settings(self) -> dict[str, Any]:
        return {"loss": self.loss, "space": self.space, "steps": self.steps, "lr": self.lr, "lr_free": self.lr_free,
                "lr_decay": self.lr_decay,
                "coeff_reg": self.coeff_reg, "coeff_perplexity": self.coeff_perplexity, "alpha": self.alpha,
                "init_candidates": self.init_candidates, "candidates": self.candidates,
                "swap_every": self.swap_every, "swap_burnin": self.swap_burnin, "prior_steps": self.prior_steps,
                "lengths": None if self.lengths is None else list(self.lengths)}

    # -- scores ------------------------------------------------------------------------------------
    def _distance(self, problem: TextProblem, var: torch.Tensor, labels: torch.Tensor, chunk: int = 64) -> torch.Tensor:
        out = []
        with torch.no_grad():
            for i in range(0, len(var), chunk):
                x = to_embeddings(problem, var[i:i + chunk], self.space)
                grads = candidate_gradients(problem, x, labels[i:i + chunk])
                out.append(gradient_distance(problem, grads, self.loss, self.alpha))
        return torch.cat(out)

    def _initial(self, problem: TextProblem, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        orders = label_orders(problem.labels, 24)
        count = max(1, self.init_candidates)
        x = random_start(problem, count, gen, self.space)
        labels = orders[torch.arange(count) % len(orders)]
        best = int(self._distance(problem, x, labels).argmin())
        x, y = x[best], labels[best]
        if count > 1:  # LAMP: then the best random order of that start
            perms = torch.stack([_row_orders(problem, gen) for _ in range(count - 1)])
            cand = torch.cat([x[None], torch.stack([_permute(x, p) for p in perms])])
            ys = y[None].expand(len(cand), -1)
            best = int(self._distance(problem, cand, ys).argmin())
            x = cand[best]
        return x[None], y[None]

    def reconstruct(self, obs: Observation, *, device: torch.device | str = "cpu", seed: int | None = None,
                    callback: Callback | None = None, progress: bool = False) -> Reconstruction:
        start = time.perf_counter()
        problem = text_problem(obs, self.lengths)
        gen = torch.Generator().manual_seed(0 if seed is None else seed)
        prior = None
        prior_note = "none (coeff_perplexity=0)"
        if self.coeff_perplexity:
            vocab = obs.inputs.vocab_size  # type: ignore[union-attr]
            if self.prior is not None:
                prior, prior_note = self.prior.eval(), "the user's language model"
            else:
                prior = language_prior(str(obs.inputs.tokenizer), vocab, self.prior_steps,  # type: ignore[union-attr]
                                       tokenizer=self.tokenizer)
                prior_note = ("gpt2-tiny trained here for " + ("the user's tokenizer" if self.tokenizer is not None
                                                               else "gradleak's tokenizer")
                              if prior is not None else
                              f"none: the capture's tokenizer {obs.inputs.tokenizer!r} is not gradleak's and no "  # type: ignore[union-attr]
                              "tokenizer or prior was given (LAMP(tokenizer=...) or LAMP(prior=...))")
        x0, y0 = self._initial(problem, gen)
        burnin = int(self.swap_burnin * self.steps)
        moves = {"applied": 0, "label_swaps": 0}

        def score(x: torch.Tensor, labels: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
            total = self._distance(problem, x, labels)
            if prior is not None:
                total = total + self.coeff_perplexity * sequence_nll(prior, ids, problem.mask)
            return total

        def hook(step: int, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if step < burnin or step % self.swap_every != 1:
                return x, labels
            x = x.clone()
            for b, n in enumerate(problem.lengths):
                movable = n - 1 if problem.eos_id is not None else n
                orders = _moves(movable, problem.seq_len, self.candidates, gen)
                ids = project(problem, to_embeddings(problem, x, self.space))[0]
                cand_x = x[0].expand(len(orders), -1, -1, -1).clone()
                cand_ids = ids.expand(len(orders), -1, -1).clone()
                cand_x[:, b] = x[0, b][orders]
                cand_ids[:, b] = ids[b][orders]
                best = int(score(cand_x, labels.expand(len(orders), -1), cand_ids).argmin())
                moves["applied"] += int(best != 0)
                x[0] = cand_x[best]
            if problem.batch > 1:
                swaps = [labels[0]]
                for i in range(problem.batch):
                    for j in range(i + 1, problem.batch):
                        if labels[0, i] != labels[0, j]:
                            y = labels[0].clone()
                            y[i], y[j] = y[j], y[i]
                            swaps.append(y)
                ys = torch.stack(swaps)
                best = int(self._distance(problem, x.expand(len(ys), -1, -1, -1), ys).argmin())
                moves["label_swaps"] += int(best != 0)
                labels = ys[best][None]
            return x, labels

        lr = self.lr if self.space == "bag" else self.lr_free * problem.embedding_norm()
        best_x, best_labels, best, trace = optimise(problem, x0, y0, steps=self.steps, lr=lr, kind=self.loss,
                                                    space=self.space, alpha=self.alpha,
                                                    reg=self.coeff_reg if self.space == "free" else 0.0,
                                                    decay=self.lr_decay, hook=hook)
        ids, y, r, projected = final_choice(problem, best_x, best_labels, self.loss, self.alpha)
        return Reconstruction(inputs=ids, labels=y, attack=self.name, settings=self.settings(),
                              trace=torch.tensor(trace)[:, None], restart_objectives=projected, best_restart=r,
                              iterations=self.steps, wall_time_s=time.perf_counter() - start,
                              details={"lengths": problem.lengths, "bag_size": int(problem.vocab.numel()),
                                       "moves_applied": moves["applied"], "label_swaps": moves["label_swaps"],
                                       "continuous_objective": float(best[r]), "prior": prior_note})


def _row_orders(problem: TextProblem, gen: torch.Generator) -> torch.Tensor:
    """A random order of the movable positions of every row (B, L)."""
    out = torch.arange(problem.seq_len).repeat(problem.batch, 1)
    for b, n in enumerate(problem.lengths):
        movable = n - 1 if problem.eos_id is not None else n
        out[b, :movable] = torch.randperm(movable, generator=gen)
    return out


def _permute(x: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` (B, L, d) reordered by ``orders`` (B, L)."""
    return torch.gather(x, 1, orders[..., None].expand(-1, -1, x.shape[-1]))


ATTACKS.register("lamp")(LAMP)
