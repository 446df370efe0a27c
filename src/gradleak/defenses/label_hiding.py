"""Label hiding: the classifier head's update is what reveals the labels (Zhao et al. 2020, iDLG; Wainakh
et al. 2022), so the client does not share it as computed.

- ``mode='shuffle'`` (default): the rows (classes) of the head's weight and bias update are permuted by a
  fresh secret permutation each round. The update keeps its shape and statistics, but its class order is
  independent of the true labels, so last-layer label inference (``attacks.labels``) lands on a uniformly
  random class: chance accuracy. The cost: the head's training signal is scrambled as well.
- ``mode='withhold'``: the head's update is kept local (as in FedPer, Arivazhagan et al. 2019); the server's
  head stays as sent. Label inference then has nothing to read and raises ``ConfigError``.

Neither mode hides what the feature layers' update carries about the label (DLG's joint optimisation can
still use it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from gradleak.defenses.base import DEFENSES, ClientContext, Defense, Update, classifier_layer
from gradleak.errors import ConfigError


@dataclass
class LabelHiding(Defense):
    """Shuffle (default) or withhold the classifier head's update."""

    name: ClassVar[str] = "label_hiding"
    strength: ClassVar[str] = "mode"
    mode: Literal["shuffle", "withhold"] = "shuffle"

    def validate(self) -> None:
        if self.mode not in ("shuffle", "withhold"):
            raise ConfigError(f"label_hiding: mode must be 'shuffle' or 'withhold', got {self.mode!r}")

    def transform(self, update: Update, context: ClientContext) -> Update:
        head, weight, bias = classifier_layer(context.model)
        names = [n for n in (weight, bias) if n is not None]
        if self.mode == "withhold":
            out = {k: v for k, v in update.items() if k not in names}
            if not out:
                raise ConfigError("label_hiding: withholding the head leaves nothing to share (the model is one layer)")
            return out
        gen = context.generator
        perm = torch.randperm(head.out_features, generator=gen, device=gen.device)
        out = dict(update)
        for n in names:
            if n in out:
                out[n] = out[n][perm.to(out[n].device)]
        return out


DEFENSES.register(LabelHiding.name)(LabelHiding)
