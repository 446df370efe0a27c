"""Simulated clients: a model, a private batch and a training protocol produce an Observation.

``simulate`` is the one client step (``gradleak.client_step.client_step``): ``fedsgd`` shares one mean gradient
(McMahan et al., 2017, FedSGD); ``fedavg`` runs ``steps`` local SGD steps and shares the weight delta (FedAvg).
The private batch is returned apart, as ``GroundTruth``. Any input kind (images, token sequences, feature
vectors) and task (classification, causal or masked LM) runs through the same steps: the client's loss is
``Task.loss``. The names below are kept here, where users and tests import them.
"""

from __future__ import annotations

from gradleak.client_step import batch_gradient, client_step, describe_inputs, local_sgd, normalize

#: ``gradleak.simulate``: one simulated client's round (see ``client_step``)
simulate = client_step

__all__ = ["batch_gradient", "describe_inputs", "local_sgd", "normalize", "simulate"]
