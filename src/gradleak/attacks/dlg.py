"""DLG (Zhu et al. 2019) and iDLG (Zhao et al. 2020): L-BFGS on the squared-L2 gradient distance.

DLG optimises a dummy image and a soft dummy label jointly. iDLG first reads the label off the last
layer's gradient (batch size 1), then optimises the image alone, which is better conditioned and faster.
Both use L-BFGS with a strong-Wolfe line search; the published recipe (fixed step 1, no line search)
diverges on some images and is kept as the reference loop in ``benchmarks/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from gradleak.attacks.base import ATTACKS
from gradleak.observation import Observation
from gradleak.attacks.optimization import EngineConfig, OptimizationAttack, resolve_labels

__all__ = ["DLG", "IDLG", "resolve_labels"]


@dataclass
class DLG(OptimizationAttack):
    """Deep Leakage from Gradients: joint image and soft-label optimisation."""

    name: ClassVar[str] = "dlg"
    input_kinds: ClassVar[frozenset[str]] = frozenset({"image", "features"})
    iterations: int = 300
    restarts: int = 1
    lr: float = 1.0
    history_size: int = 100
    labels: Literal["auto", "infer", "leaked", "soft"] = "soft"

    def engine(self, obs: Observation | None = None) -> EngineConfig:
        return EngineConfig(
            iterations=self.iterations, restarts=self.restarts, optimizer="lbfgs", lr=self.lr,
            history_size=self.history_size, objective="l2", init="randn",
        )


@dataclass
class IDLG(OptimizationAttack):
    """Improved DLG: labels from the last layer's gradient (or leaked), then the image alone."""

    name: ClassVar[str] = "idlg"
    input_kinds: ClassVar[frozenset[str]] = frozenset({"image", "features"})
    iterations: int = 300
    restarts: int = 1
    lr: float = 1.0
    history_size: int = 100
    #: 'zeros' starts at the data mean (the attacker knows the normalisation); it reaches 30 dB in about half
    #: the evaluations of a noise start (benchmarks/bench_dlg.py). Restarts need 'randn' to differ.
    init: Literal["zeros", "randn", "rand"] = "zeros"

    def engine(self, obs: Observation | None = None) -> EngineConfig:
        init = "randn" if self.restarts > 1 and self.init == "zeros" else self.init
        return EngineConfig(
            iterations=self.iterations, restarts=self.restarts, optimizer="lbfgs", lr=self.lr,
            history_size=self.history_size, objective="l2", init=init,
        )


ATTACKS.register("dlg")(DLG)
ATTACKS.register("idlg")(IDLG)
