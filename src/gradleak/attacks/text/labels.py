"""Label inference for sequence classification from the classifier head's update.

The head is a linear layer on the pooled representation; for cross-entropy its bias gradient is
``mean_i (p_i - onehot(y_i))`` (iDLG, Zhao et al. 2020: for one sample the only negative entry is the label).
For a batch the count of class ``c`` is ``B (mean_i p_ic - g_c)`` (LLG, Wainakh et al. 2022); the attacker
estimates the mean softmax by running the shared model on random token sequences of the batch's length (the
image rule in ``gradleak.attacks.labels`` probes with Gaussian images, which a token model cannot take).
BERT's pooler ends in tanh, so the weight-row sign rules (Yin et al. 2021) do not apply; the bias is used.
"""

from __future__ import annotations

import torch

from gradleak.attacks.labels import last_linear, round_counts
from gradleak.errors import ConfigError
from gradleak.inputs import TokenInput
from gradleak.observation import Observation


def sequence_labels(obs: Observation, probes: int = 64, seed: int = 0) -> torch.Tensor:
    """Labels ``(B,)`` of a sequence-classification batch (a multiset; order carries no meaning)."""
    if not isinstance(obs.inputs, TokenInput) or obs.task.kind != "classification":
        raise ConfigError("sequence label inference needs token inputs and a classification task")
    num_classes = int(obs.task.num_classes)
    model = obs.build_model("cpu").eval()
    _, bias = last_linear(model, num_classes)
    grads = obs.gradient_estimate()
    if bias is None or bias not in grads:
        raise ConfigError(f"label inference needs the classifier head's bias gradient ({bias or 'no bias'}); the "
                          f"update holds none")
    g = grads[bias].float().cpu()
    if obs.batch_size == 1:
        return g.argmin().view(1).long()
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, obs.inputs.vocab_size, (probes, obs.inputs.seq_len), generator=gen)
    with torch.no_grad():
        out = model(ids)
        logits = out.logits if hasattr(out, "logits") else out
        mean_p = torch.softmax(logits.float(), dim=-1).mean(0)
    counts = round_counts(obs.batch_size * (mean_p - g), obs.batch_size)
    return torch.repeat_interleave(torch.arange(num_classes), counts)
