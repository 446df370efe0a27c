"""Language models from ``transformers`` configs (no download), and a local pre-training cache.

Named sizes: ``gpt2-tiny`` (2 layers, width 64: tests), ``gpt2-small`` (GPT-2 small's shape: 12 layers, width
768, 12 heads), ``bert-tiny`` (width 64), ``bert-mini`` (width 256) and ``bert-base``
(BERT base's shape). Vocabulary and padding come from the
tokenizer. ``pretrain`` trains a decoder on the bundled records with AdamW for a fixed number of steps and caches
the weights (safetensors, keyed by config, tokenizer, steps and seed), so attacks can be measured on a trained
model as well as a random one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from gradleak.cache import cached_weights
from gradleak.errors import ConfigError
from gradleak.model_spec import ModelSpec
from gradleak.text.corpus import public_sentences
from gradleak.training_task import Task

#: name -> (model_type, config settings)
TEXT_MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "gpt2-tiny": ("gpt2", {"n_layer": 2, "n_embd": 64, "n_head": 2, "n_positions": 128}),
    "gpt2-mini": ("gpt2", {"n_layer": 4, "n_embd": 256, "n_head": 4, "n_positions": 256}),
    "gpt2-small": ("gpt2", {"n_layer": 12, "n_embd": 768, "n_head": 12, "n_positions": 1024}),
    "bert-tiny": ("bert", {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                           "intermediate_size": 256, "max_position_embeddings": 128}),
    "bert-mini": ("bert", {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
                           "intermediate_size": 1024, "max_position_embeddings": 256}),
    "bert-base": ("bert", {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                           "intermediate_size": 3072, "max_position_embeddings": 512}),
}


def text_model_spec(name: str, vocab_size: int, pad_id: int, *, eos_id: int | None = None, head: str | None = None,
                    num_labels: int = 2, dropout: float = 0.0, **overrides: Any) -> ModelSpec:
    """The ``ModelSpec`` of a named text model for a tokenizer's vocabulary; decoders default to causal LM,
    encoders to sequence classification with ``num_labels``. ``dropout``: every dropout rate of the config
    (embedding, attention, residual/hidden); 0 by default, 0.1 is the ``transformers`` default a user's model has
    (a train-mode step then draws masks the attacker does not see; see ``attacks.text.dropout``)."""
    if not (isinstance(dropout, (int, float)) and 0.0 <= float(dropout) < 1.0):
        raise ConfigError(f"dropout must be a rate in [0, 1), got {dropout!r}")
    if name not in TEXT_MODELS:
        raise ConfigError(f"unknown text model {name!r}; known: {', '.join(TEXT_MODELS)}")
    model_type, settings = TEXT_MODELS[name]
    config: dict[str, Any] = {**settings, "vocab_size": vocab_size, "pad_token_id": pad_id, **overrides}
    if model_type == "gpt2":
        end = pad_id if eos_id is None else eos_id
        config.update({"bos_token_id": end, "eos_token_id": end, "resid_pdrop": dropout, "embd_pdrop": dropout,
                       "attn_pdrop": dropout})
        head = head or "causal_lm"
    else:
        config.update({"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout})
        if eos_id is not None:  # where a record ends: public, as the tokenizer is (DAGER reads records' ends by it)
            config["eos_token_id"] = eos_id
        head = head or "sequence_classification"
        if head == "sequence_classification":
            config["num_labels"] = num_labels
    return ModelSpec(model_type, {"config": config, "head": head}, source="huggingface")


def pretrain(spec: ModelSpec, batches: Callable[[int], torch.Tensor], *, steps: int = 200, lr: float = 1e-3,
             seed: int = 0, key: str = "", progress: bool = False) -> dict[str, torch.Tensor]:
    """Weights of ``spec`` after ``steps`` AdamW steps on ``batches(step)`` (token ids, padding ignored), cached
    under ``$GRADLEAK_CACHE/text-models``; ``key`` names the data for the cache. Decoders: causal LM. Encoders
    (BERT): masked LM on the same encoder (15 % of the tokens replaced by a random token and predicted, BERT's
    corruption without a mask token, which the tokenizer lacks); the encoder's weights are returned under the
    classifier's names, its head stays as built."""
    encoder = spec.name == "bert"
    trained = ModelSpec(spec.name, {**spec.kwargs, "head": "masked_lm"}, source=spec.source) if encoder else spec
    recipe = {"spec": trained.to_json(), "steps": steps, "lr": lr, "seed": seed, "key": key, "v": 1}
    if not encoder:
        return cached_weights("text-models", recipe,
                              lambda: _train_causal_lm(spec, batches, steps, lr, seed, progress, Task.causal_lm()))
    pad = spec.kwargs["config"].get("pad_token_id")
    weights = cached_weights("text-models", recipe,
                             lambda: _train_masked_lm(trained, batches, steps, lr, seed, progress, pad))
    torch.manual_seed(seed)
    own = spec.build().state_dict()
    own.update({k: v for k, v in weights.items() if k in own and own[k].shape == v.shape})
    return own


def _train_causal_lm(spec: ModelSpec, batches: Callable[[int], torch.Tensor], steps: int, lr: float, seed: int,
                     progress: bool, task: Any) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model: nn.Module = spec.build()
    model.train()
    pad = spec.kwargs["config"].get("pad_token_id")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    for step in range(steps):
        ids = batches(step)
        mask = None if pad is None else (ids != pad).long()
        loss = task.loss(model, ids, None, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if progress and step % 20 == 0:
            print(f"pretrain step {step}: loss {loss.item():.3f}")
    return model.state_dict()


#: tokens of one pre-training text (public sentences are cut to it)
PRETRAIN_LEN = 48


def pretrain_public(spec: ModelSpec, tokenizer: Any, *, steps: int, batch: int = 4, lr: float = 1e-3, seed: int = 0,
                    progress: bool = False) -> dict[str, torch.Tensor]:
    """Weights of ``spec`` after ``steps`` AdamW steps (``pretrain``: causal LM for decoders, masked LM for BERT) on
    ``batch`` public sentences a step (``public_sentences("pretrain")``, each followed by the end-of-sequence
    token), cached. 0 steps: the model as built from its seed."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ConfigError(f"pretrain steps must be an integer >= 0, got {steps!r}")
    torch.manual_seed(seed)
    if steps == 0:
        return spec.build().state_dict()
    sentences = public_sentences("pretrain")
    rows = [(tokenizer.encode(s) + [tokenizer.eos_id])[:PRETRAIN_LEN] for s in sentences]
    ids = torch.tensor([r + [tokenizer.pad_id] * (PRETRAIN_LEN - len(r)) for r in rows], dtype=torch.long)
    g = torch.Generator().manual_seed(seed)

    def draw(step: int) -> torch.Tensor:
        return ids[torch.randint(0, len(ids), (batch,), generator=g)]

    key = f"public-{len(sentences)}-{tokenizer.name}-batch{batch}"
    return pretrain(spec, draw, steps=steps, lr=lr, seed=seed, key=key, progress=progress)


def _train_masked_lm(spec: ModelSpec, batches: Callable[[int], torch.Tensor], steps: int, lr: float, seed: int,
                     progress: bool, pad: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model: nn.Module = spec.build()
    model.train()
    vocab = model.config.vocab_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed + 1)
    for step in range(steps):
        ids = batches(step)
        mask = (ids != pad).long()
        chosen = (torch.rand(ids.shape, generator=g) < 0.15) & (ids != pad)
        corrupted = torch.where(chosen, torch.randint(0, vocab, ids.shape, generator=g), ids)
        labels = torch.where(chosen, ids, torch.full_like(ids, -100))
        loss = Task.masked_lm().loss(model, corrupted, labels, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if progress and step % 20 == 0:
            print(f"pretrain (masked LM) step {step}: loss {loss.item():.3f}")
    return model.state_dict()
