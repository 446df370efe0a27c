"""Attacks on token sequences: the token bag, DAGER's exact span test (and what the package grows beyond it)."""

from __future__ import annotations

from gradleak.attacks.text import dager, lamp, subspace, tag  # noqa: F401  (registers)
from gradleak.attacks.text import pursuit  # noqa: F401  (registers: causal LMs past the width)
from gradleak.attacks.text.token_bag import token_bag

__all__ = ["token_bag"]
