"""A simulated fine-tuning client on text: a batch of private records, a language model, one shared update.

``text_victim`` tokenises records (each ends with the end-of-sequence token, as fine-tuning sets are prepared),
pads them on the right, builds the named model from its config (random, or pre-trained here on other records),
and runs the client's step through ``gradleak.client_step``: the same code path as images, with token inputs
and a causal-LM (decoders) or sequence-classification (encoders) loss. An update defense applies as for images;
DP-SGD (Opacus, per-record clipping and noise) is the client step's too (``defenses.dp.dp_text_gradient``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from gradleak import limits
from gradleak.client_step import client_step
from gradleak.errors import ConfigError
from gradleak.inputs import TokenInput
from gradleak.memory import FLOAT_BYTES, check_memory
from gradleak.model_spec import spec_of
from gradleak.observation import GroundTruth, Observation
from gradleak.training_task import Task
from gradleak.text.corpus import Record, private_records
from gradleak.text.models import TEXT_MODELS, pretrain, text_model_spec
from gradleak.text.tokenizer import Tokenizer, load_tokenizer


@dataclass
class TextCase:
    """What a text experiment needs: the observation, the truth, the records behind it and the tokenizer."""

    observation: Observation
    truth: GroundTruth
    records: list[Record]
    tokenizer: Tokenizer


def encode_records(tokenizer: Tokenizer, records: list[Record], seq_len: int | None = None) -> torch.Tensor:
    """Token ids ``(B, L)``: each record followed by the end-of-sequence token, right-padded."""
    rows = [tokenizer.encode(r.text) + [tokenizer.eos_id] for r in records]
    length = seq_len or max(len(r) for r in rows)
    return torch.tensor([(r + [tokenizer.pad_id] * length)[:length] for r in rows], dtype=torch.long)


#: activations one token keeps per layer and hidden unit through a transformer's forward and backward (attention
#: projections and scores, MLP in and out, norms, residuals: about 20 kept for the backward, plus the gradients in
#: flight): an upper figure for GPT-2/BERT blocks
ACTIVATIONS_PER_HIDDEN = 24


def text_step_bytes(model: str, records: int, seq_len: int, vocab_size: int) -> int:
    """Estimated peak bytes of one client step on ``records`` x ``seq_len`` tokens of text model ``model``: the
    logits and their gradient (``vocab_size`` per token, x 3) and every layer's activations
    (``ACTIVATIONS_PER_HIDDEN`` x hidden size per token), in float32."""
    _, settings = TEXT_MODELS[model]
    hidden = settings.get("n_embd", settings.get("hidden_size", 768))
    layers = settings.get("n_layer", settings.get("num_hidden_layers", 12))
    tokens = records * seq_len
    return tokens * (3 * vocab_size + ACTIVATIONS_PER_HIDDEN * hidden * layers) * FLOAT_BYTES


def _check_text_memory(model: str, records: int, seq_len: int, vocab_size: int) -> None:
    check_memory(text_step_bytes(model, records, seq_len, vocab_size),
                 f"a text batch of {records} records of {seq_len} tokens on {model}")


#: records generated to measure the bundled records' length before generating many of them
_LENGTH_SAMPLE = 32


def text_victim(model: str = "gpt2-small", batch_size: int = 8, *, seed: int = 0, vocab_size: int = 2048,
                pretrain_steps: int = 0, lora_rank: int | None = None, lora_steps: int = 0, defense: Any = None,
                records: list[Record] | None = None, max_len: int | None = None,
                pretrain_batch: int = 16) -> TextCase:
    """One client's update on ``batch_size`` bundled records (drawn by ``seed``) or the given ``records``.

    ``lora_rank``: only a LoRA adapter on the attention projections trains and is shared (Hu et al. 2021);
    ``lora_steps``: Adam steps the adapter took on other records before this round (``B != 0``; at 0 the
    adapter is fresh, ``B = 0``, and only ``B``'s gradient is nonzero); ``max_len``: records cut to this many
    tokens (their end-of-sequence token included), to fit a batch under a span test's width; ``pretrain_batch``:
    records per pre-training step (AdamW's step size does not depend on it; the cost is linear in it)."""
    if records is None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"a text batch needs at least one record, got batch_size {batch_size!r}")
        limits.check("batch_size", batch_size, "text batch_size (records)")
    elif not records:
        raise ConfigError("a text batch needs at least one record, got none")
    if isinstance(pretrain_steps, bool) or not isinstance(pretrain_steps, int) or pretrain_steps < 0:
        raise ConfigError(f"pretrain_steps must be an integer >= 0, got {pretrain_steps!r}")
    limits.check("local_steps", pretrain_steps, "pretrain_steps")
    if model not in TEXT_MODELS:
        raise ConfigError(f"unknown text model {model!r}; known: {', '.join(TEXT_MODELS)}")
    tokenizer = load_tokenizer("bpe", vocab_size)
    if records is None and batch_size > _LENGTH_SAMPLE:  # generating many records takes long: estimate first
        sample = encode_records(tokenizer, private_records(_LENGTH_SAMPLE, seed=1000 + seed))
        _check_text_memory(model, batch_size, sample.shape[1], tokenizer.vocab_size)
    records = records if records is not None else private_records(batch_size, seed=1000 + seed)
    ids = encode_records(tokenizer, records)
    _check_text_memory(model, ids.shape[0], ids.shape[1], tokenizer.vocab_size)
    if max_len is not None and ids.shape[1] > max_len:
        ids = encode_records(tokenizer, records, max_len)
        cut = ids[:, -1] != tokenizer.pad_id  # cut records end with their end-of-sequence token
        ids[cut, -1] = tokenizer.eos_id
    encoder = TEXT_MODELS[model][0] == "bert"
    spec = text_model_spec(model, tokenizer.vocab_size, tokenizer.pad_id, eos_id=tokenizer.eos_id,
                           num_labels=4)
    torch.manual_seed(seed)
    net = spec.build()
    if pretrain_steps:
        other = encode_records(tokenizer, private_records(512, seed=777), ids.shape[1] + 8)
        g = torch.Generator().manual_seed(seed)
        key = f"records-512-777-{tokenizer.name}" + ("" if pretrain_batch == 16 else f"-batch{pretrain_batch}")
        weights = pretrain(spec, lambda step: other[torch.randint(0, len(other), (pretrain_batch,), generator=g)],
                           steps=pretrain_steps, seed=seed, key=key)
        net.load_state_dict(weights)
    if lora_rank is not None:
        from peft import LoraConfig, get_peft_model

        targets = ["query", "value"] if encoder else ["c_attn"]
        net = get_peft_model(net, LoraConfig(r=lora_rank, lora_alpha=lora_rank, target_modules=targets,
                                             lora_dropout=0.0))
        spec = spec_of(net)
        if lora_steps:
            adapt_lora(net, tokenizer, ids.shape[1], lora_steps, seed=seed, encoder=encoder)
    labels = torch.tensor([r.label for r in records]) if encoder else None
    task = Task.classification(4) if encoder else Task.causal_lm()
    input_spec = TokenInput(ids.shape[1], tokenizer.vocab_size, tokenizer.pad_id, tokenizer.name)
    obs, truth = client_step(spec, ids, labels, input_spec=input_spec, task=task, model=net, seed=seed,
                             defense=defense)
    return TextCase(obs, truth, records, tokenizer)


def adapt_lora(net: torch.nn.Module, tokenizer: Tokenizer, seq_len: int, steps: int, *, seed: int = 0,
               encoder: bool = False, lr: float = 1e-3, batch_size: int = 16) -> None:
    """Train ``net``'s trainable (adapter) parameters in place for ``steps`` Adam steps on other records (seeded),
    so the adapter the server sends is one mid-way through fine-tuning."""
    other_records = private_records(256, seed=778)
    other = encode_records(tokenizer, other_records, seq_len + 8)
    labels = torch.tensor([r.label for r in other_records])
    task = Task.classification(4) if encoder else Task.causal_lm()
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    g = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(steps):
        pick = torch.randint(0, len(other), (batch_size,), generator=g)
        x = other[pick]
        loss = task.loss(net, x, labels[pick] if encoder else None, (x != tokenizer.pad_id).long())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
