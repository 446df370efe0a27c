"""The shared engine of optimisation attacks: find inputs whose simulated update matches the observed one.

For a candidate batch ``x`` (and labels), the attacker simulates the client's update with the server's model,
measures its distance to the observed update (an objective from ``objectives``), adds priors (``priors``) and
descends on ``x``. One concept per module:

- ``config``: ``EngineConfig``, the hyperparameters;
- ``matcher``: ``UpdateMatcher`` (one gradient) and ``UnrolledMatcher`` (FedAvg's local steps), candidate ->
  objective;
- ``evaluation``: how the objective and its gradient are computed for all restarts at once (plain autograd on
  a twin of the model for one restart, torch.func otherwise), the convolution backend and denormal flushing,
  all recorded in ``Reconstruction.details["compute"]``;
- ``pruned_double_backward``: the twin's convolutions, whose double backward skips what nobody asks for;
- ``loop``: ``optimize`` / ``optimize_many``, the optimiser loop, each restart's best iterate, the best restart;
- ``attack``: ``OptimizationAttack``, the base of DLG, Inverting Gradients, GradInversion, ..., and
  ``resolve_labels``.
"""

from gradleak.attacks.optimization.attack import OptimizationAttack, resolve_labels
from gradleak.attacks.optimization.config import EngineConfig
from gradleak.attacks.optimization.loop import optimize, optimize_many
from gradleak.attacks.optimization.matcher import MATCHERS, UnrolledMatcher, UpdateMatcher

__all__ = ["EngineConfig", "MATCHERS", "OptimizationAttack", "UnrolledMatcher", "UpdateMatcher", "optimize",
           "optimize_many", "resolve_labels"]
