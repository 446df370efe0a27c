"""Attacks by name. ``ATTACKS.build("idlg", iterations=300).reconstruct(observation)``."""

from __future__ import annotations

from gradleak.attacks import dlg  # noqa: F401  (registers)
from gradleak.attacks import deep_prior, fedavg, gradinversion, inverting  # noqa: F401  (registers)
from gradleak.attacks import generative_prior  # noqa: F401  (registers gias)
from gradleak.attacks import analytic, imprint, rgap  # noqa: F401  (registers)
from gradleak.attacks import cocktail, spear  # noqa: F401  (registers)
from gradleak.attacks import text  # noqa: F401  (registers the token-sequence attacks)
from gradleak.attacks.base import ATTACKS, Attack, Reconstruction
from gradleak.attacks.labels import LABEL_RULES, infer_labels

__all__ = ["ATTACKS", "LABEL_RULES", "Attack", "Reconstruction", "infer_labels"]
