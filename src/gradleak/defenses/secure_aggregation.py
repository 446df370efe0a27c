"""Secure aggregation (Bonawitz et al. 2017): the server learns only the sum of the N clients' updates.

Simulation: the target client's update is summed with the updates of ``clients - 1`` other clients, each
training (same protocol, same server model) on its own batch of the same size, drawn with the client's seeded
generator from the other images of the dataset. What the attacker is given, explicitly:

- ``Observation.update`` is the aggregate divided by N, i.e. the mean of the N client updates. N is public in
  secure aggregation, so this is the server's sum, rescaled; it is the mean gradient of all N * B images.
- ``Observation.batch_size`` stays the *target* client's batch size B, and the ground truth is that client's
  batch only: an attack is asked to find the target's B images in an update that mixes N * B.
- ``Observation.info['defense']`` records the defense and N.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from gradleak.defenses.base import DEFENSES, ClientContext, Defense, Update
from gradleak.errors import ConfigError


@dataclass
class SecureAggregation(Defense):
    """The server sees the mean (equivalently the sum) of ``clients`` updates, one of them the target's."""

    name: ClassVar[str] = "secure_aggregation"
    strength: ClassVar[str] = "clients"
    clients: int = 16

    def validate(self) -> None:
        if not isinstance(self.clients, int) or self.clients < 1:
            raise ConfigError(f"secure_aggregation: clients must be an integer >= 1, got {self.clients!r}")

    def transform(self, update: Update, context: ClientContext) -> Update:
        if self.clients == 1:
            return update
        if context.draw_others is None:
            raise ConfigError(
                "secure_aggregation needs the other clients' data: pass population=(images, labels) to "
                "victim.simulate (make_victim and training do this from the dataset)"
            )
        b = int(context.inputs.shape[0])
        xs, ys = context.draw_others((self.clients - 1) * b, context.generator)
        total = {k: v.clone() for k, v in update.items()}
        for i in range(self.clients - 1):
            other = context.update_of(xs[i * b : (i + 1) * b], ys[i * b : (i + 1) * b])
            for k in total:
                total[k] += other[k]
        return {k: v / self.clients for k, v in total.items()}


DEFENSES.register(SecureAggregation.name)(SecureAggregation)
