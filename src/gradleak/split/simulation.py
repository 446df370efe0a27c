"""Split learning trained for real, and what the server observes of it.

Client ``f_c`` (blocks 1..cut) and server ``f_s`` (the rest): the client sends ``z = f_c(x)`` (plus noise, if
defended), the server computes the loss with the labels and returns ``dL/dz`` (Vepakomma et al. 2018).

Why this is not ``gradleak.client_step``: a federated client shares a parameter update (a gradient or weight
delta keyed by parameter name) of a model the server holds whole, and ``Observation`` is validated against that
model. A split client shares no parameter update at all: the server sees activations at the cut and the
gradients it returns, per example, for a model it holds only half of, so ``SplitObservation`` has no update,
no ``ModelSpec`` and no task to validate against, and its defenses (``SplitDefense``: noise on the smashed data
or on the returned gradients, NoPeek) act on those tensors, not on a parameter update. What is shared: the
private batch is a ``GroundTruth``, images are described by ``ImageInput``, and every leak is scored beside the
same attacker guesses (``baselines.ImageGuesses``); the truth is made by ``client_step.make_truth``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gradleak.baselines import ImageGuesses, majority_label_accuracy
from gradleak.client_step import make_truth
from gradleak.data import ImageDataset
from gradleak.errors import ConfigError
from gradleak.inputs import ImageInput
from gradleak.observation import GroundTruth
from gradleak.split.defenses import SplitDefense, distance_correlation, equalise_and_noise
from gradleak.split.model import SplitCNN


@dataclass(frozen=True)
class SplitObservation:
    """Everything a split-learning party sees of one batch, and nothing else (no input images).

    ``smashed``: the cut activations as sent (noised if defended). ``returned``: the gradients sent back (as the
    client receives them, perturbed if defended). ``server_state`` / ``client_architecture``: the server's weights,
    and the client's layer shapes as a fresh copy (public architecture); ``client_state`` only for white-box
    analysis. ``labels`` only if the server holds them (it does in vanilla split learning).
    """

    cut: int
    input_shape: tuple[int, int, int]
    smashed: torch.Tensor
    returned: torch.Tensor
    model_kwargs: dict
    server_state: dict[str, torch.Tensor]
    client_state: dict[str, torch.Tensor] | None
    labels: torch.Tensor | None

    def architecture(self) -> SplitCNN:
        """A freshly initialised model of the public architecture (no private weights)."""
        return SplitCNN(**self.model_kwargs)

    def white_box_client(self) -> nn.Module:
        if self.client_state is None:
            raise ConfigError("this observation carries no client weights; use UnSplit (unsplit_inversion)")
        client = self.architecture().client(self.cut)
        client.load_state_dict(self.client_state)
        return client


#: a network *learned* when it removes at least this share of the majority-class guess's test errors: 0.5 asks a
#: 10-class model for about 0.55 accuracy where the majority class gets 0.1, a 1-in-10 binary one for 0.95 where
#: it gets 0.9 (a fixed accuracy margin would be lax on the one and impossible on the other)
LEARNED_SHARE = 0.5


def errors_removed(accuracy: float, majority: float) -> float:
    """Share of the majority-class guess's errors a classifier removes: 0 at the majority accuracy, 1 at 1.0."""
    return (accuracy - majority) / max(1.0 - majority, 1e-12)


@dataclass(frozen=True)
class SplitRun:
    """A trained split model, its test accuracy beside the majority-class accuracy on the same test labels, the
    observation of a private batch, its ground truth, and the attacker's public data (held-out images disjoint
    from the batch, for the guesses every leak is scored beside)."""

    model: SplitCNN
    test_accuracy: float
    observation: SplitObservation
    truth: GroundTruth
    #: accuracy of always answering the test set's most frequent class (the label prior's best constant guess)
    majority_accuracy: float
    input_spec: ImageInput
    public_images: torch.Tensor
    public_labels: torch.Tensor

    @property
    def errors_removed(self) -> float:
        return errors_removed(self.test_accuracy, self.majority_accuracy)

    @property
    def learned(self) -> bool:
        """The network beats the majority class by ``LEARNED_SHARE`` of its errors (leakage of a network that
        learned nothing measures nothing a user trains)."""
        return self.errors_removed >= LEARNED_SHARE

    def guesses(self) -> ImageGuesses:
        """The attacker's image guesses without the smashed data: mid-gray, the public mean image, and the best
        public (held-out, never observed) image."""
        return ImageGuesses.of(self.input_spec, self.public_images)


def _labels(labels: torch.Tensor, positive_class: int | None) -> torch.Tensor:
    return labels if positive_class is None else (labels == positive_class).long()


def _loss(logits: torch.Tensor, y: torch.Tensor, binary: bool) -> torch.Tensor:
    if binary:
        return nn.functional.binary_cross_entropy_with_logits(logits.squeeze(1), y.float())
    return nn.functional.cross_entropy(logits, y)


def _step(model: SplitCNN, cut: int, x: torch.Tensor, y: torch.Tensor, defense: SplitDefense, binary: bool,
          gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One split forward/backward; returns (loss, smashed as sent, returned gradient as the client receives it)."""
    smashed = model.client(cut)(x)
    sent = smashed
    if defense.smashed_noise:
        sent = smashed + torch.randn(smashed.shape, generator=gen) * defense.smashed_noise
    sent_leaf = sent.detach().requires_grad_(True)  # the wire: the server holds only this tensor
    loss = _loss(model.server(cut)(sent_leaf), y, binary)
    loss.backward()
    returned = sent_leaf.grad.detach() * x.shape[0]  # per-example gradients of the summed loss
    if defense.gradient_noise:
        returned = equalise_and_noise(returned, defense.gradient_noise, gen)
    client_loss = (sent * (returned / x.shape[0])).sum()
    if defense.nopeek:
        client_loss = client_loss + defense.nopeek * distance_correlation(x, smashed)
    client_loss.backward()
    return loss.detach(), sent.detach(), returned


def train_split(data: ImageDataset, cut: int = 2, steps: int = 60, batch_size: int = 32, lr: float = 0.05,
                defense: SplitDefense = SplitDefense(), positive_class: int | None = None, observe: int = 8,
                seed: int = 0, width: int = 8) -> SplitRun:
    """Train a ``SplitCNN`` for ``steps`` SGD steps on the first 70% of ``data`` (the rest is the test set), then
    observe one batch of ``observe`` held-out-from-training images the way the server and client see it; the other
    test images are the attacker's public data.

    ``positive_class`` turns the task binary (that class vs the rest, one logit), the setting of Li et al. (2022).
    """
    SplitCNN.check_cut(cut)
    if steps < 0 or batch_size < 1 or observe < 1:
        raise ConfigError(f"train_split: steps >= 0, batch_size >= 1, observe >= 1 "
                          f"(got {steps}, {batch_size}, {observe})")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    c, h, _ = data.input_shape
    binary = positive_class is not None
    kwargs = {"channels": c, "size": h, "num_outputs": 1 if binary else data.num_classes, "width": width}
    model = SplitCNN(**kwargs)
    order = torch.randperm(len(data), generator=gen)
    n_train = int(0.7 * len(data))
    train_idx, test_idx = order[:n_train], order[n_train:]
    if len(test_idx) < observe:
        raise ConfigError(f"dataset {data.name!r} too small to observe {observe} held-out images")
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for _ in range(steps):
        idx = train_idx[torch.randint(len(train_idx), (batch_size,), generator=gen)]
        x, y = data.images[idx], _labels(data.labels[idx], positive_class)
        opt.zero_grad()
        _step(model, cut, x, y, defense, binary, gen)
        opt.step()
    model.eval()
    with torch.no_grad():
        xt, yt = data.images[test_idx], _labels(data.labels[test_idx], positive_class)
        logits = model(xt)
        pred = (logits.squeeze(1) > 0).long() if binary else logits.argmax(1)
        acc = float((pred == yt).float().mean())
    majority = majority_label_accuracy(yt, yt)
    obs_idx = test_idx[:observe]
    x, y = data.images[obs_idx], _labels(data.labels[obs_idx], positive_class)
    model.zero_grad()
    _, sent, returned = _step(model, cut, x, y, defense, binary, gen)
    model.zero_grad()
    state = {k: v.detach().clone() for k, v in model.client(cut).state_dict().items()}
    server = {k: v.detach().clone() for k, v in model.server(cut).state_dict().items()}
    obs = SplitObservation(cut, data.input_shape, sent, returned, kwargs, server, state, y.clone())
    public = test_idx[observe:]
    spec = ImageInput(data.input_shape, tuple(data.mean), tuple(data.std))
    return SplitRun(model, acc, obs, make_truth(x, y, spec), float(majority), spec,
                    data.images[public].clone(), _labels(data.labels[public], positive_class).clone())
