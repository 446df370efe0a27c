"""DP-SGD on a text model's step: the names text code imports, defined in ``gradleak.defenses.dp`` (the one
place gradleak wires Opacus; its docstring states the per-record loss and Opacus's layer support)."""

from __future__ import annotations

from gradleak.defenses.dp import dp_text_gradient, per_example_loss

__all__ = ["dp_text_gradient", "per_example_loss"]
