"""The bag of tokens in a batch, read off the update without any optimisation.

Untied input embeddings (BERT's word embeddings): only the rows of tokens in the batch receive a gradient, so the
non-zero rows are the bag (Melis et al. 2019; used by TAG, LAMP and DAGER as their first step). Tied embeddings
(GPT-2's ``wte`` is also the output layer): the output softmax writes every row, so the rows say nothing; the bag
then comes from the first attention layer's span test (``dager``), which holds whatever the embedding is tied to:
under dropout its masked test, on a noised update at the spectrum's largest drop, as DAGER runs them.
"""

from __future__ import annotations

import torch

from gradleak.attacks.rank import surface
from gradleak.attacks.text.dager import DAGER, EMBEDDINGS, architecture
from gradleak.errors import ConfigError
from gradleak.inputs import TokenInput
from gradleak.observation import Observation


def _tied(model: torch.nn.Module) -> bool:
    config = getattr(model, "config", None)
    out = model.get_output_embeddings() if callable(getattr(model, "get_output_embeddings", None)) else None
    inp = model.get_input_embeddings() if callable(getattr(model, "get_input_embeddings", None)) else None
    return bool(out is not None and inp is not None and out.weight is inp.weight) or bool(
        getattr(config, "tie_word_embeddings", False) and out is not None)


def token_bag(obs: Observation, *, rtol: float = 1e-6) -> set[int]:
    """The set of token ids in the observed batch (padding included when it entered the model)."""
    if not isinstance(obs.inputs, TokenInput):
        raise ConfigError("the token bag needs token inputs")
    update = obs.gradient_estimate()
    model = obs.build_model()
    name = next((n for n in update if n.endswith(EMBEDDINGS)), None)
    if name is not None and not _tied(model):
        grad = update[name].detach()
        norms = grad.norm(dim=1)
        return {int(i) for i in torch.nonzero(norms > rtol * norms.max().clamp_min(1e-30)).flatten()}
    attack = DAGER()
    arch = architecture(model.eval(), update)
    span = arch.span(0, attack.rtol)  # rank cut at the spectrum's gap (gradleak.attacks.rank)
    if span.decision is not None and span.decision.ambiguous:
        surface({"rank_decision": {"layer1": span.decision.details()}}, "token_bag")
    span, threshold = attack._noise_aware(span, obs, attack.threshold)
    if span.full:
        raise ConfigError("the batch holds as many tokens as the first layer is wide: its span covers everything")
    dropout = obs.model_mode == "train" and arch.dropout_rate() > 0  # masked first-layer inputs (attacks.text.dropout)
    bag: set[int] = set()
    for tokens in attack._first_candidates(arch, span, obs.inputs.seq_len, dropout, batch=obs.batch_size,
                                           threshold=threshold):
        bag |= set(tokens)
    return bag
