"""Gradient inversion with a generative image prior (GIAS, Jeon et al. 2021): the candidate images are a generator's
output, trained beforehand on public images; the attack searches its latent code first, then its weights.

No pretrained generator can be downloaded here, so the generator is the decoder of a small variational autoencoder
(Kingma & Welling 2014) trained locally on random crops of a *public* image set (the images the attacker has that
are not the client's: ``public`` names a dataset, ``exclude`` its classes to leave out, e.g. the source photos of
the private crops), at the attack's resolution, and cached like a pretrained model (``gradleak.cache``; same
settings and seed, same weights). A VAE's decoder maps a standard-normal code to a natural-looking image, so the
latent search can start from random codes (the best of ``init_candidates`` by the objective).

The objective is Inverting Gradients' (cosine distance of the whole update, Geiping et al. 2020, through the engine's
``UpdateMatcher``); the latent stage keeps the images on the generator's range, the parameter stage (GIAS's second
stage; one generator for the batch here, where GIAS fits one per image) lets them leave it where the update asks.
The answer is the best iterate of both stages by that objective.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from gradleak.attacks.base import ATTACKS, Callback, Reconstruction
from gradleak.attacks.deep_prior import DeepImagePrior, GeneratorSearch
from gradleak.attacks.optimization import EngineConfig, UpdateMatcher
from gradleak.cache import cached_weights
from gradleak.data import load_dataset
from gradleak.errors import ConfigError
from gradleak.observation import Observation

#: bumped when the generator's architecture or training recipe changes, so a cached generator is never reused
RECIPE_VERSION = 1


class Decoder(nn.Module):
    """A DCGAN-style decoder (Radford et al. 2016) without normalisation layers (a batch of one image must decode
    as it would in a batch): code ``(B, latent_dim)`` -> linear -> ``4 width`` maps at 1/8 of the image side ->
    three (upsample x2, 3x3 conv, LeakyReLU) stages -> 3x3 conv -> sigmoid (pixels in [0, 1])."""

    def __init__(self, channels: int, size: tuple[int, int], latent_dim: int, width: int) -> None:
        super().__init__()
        h, w = size
        if h % 8 or w % 8:
            raise ConfigError(f"the generative prior needs image sides divisible by 8, got {h}x{w}")
        self.start = (4 * width, h // 8, w // 8)
        self.project = nn.Linear(latent_dim, 4 * width * (h // 8) * (w // 8))
        layers: list[nn.Module] = []
        for cin, cout in ((4 * width, 2 * width), (2 * width, width), (width, width)):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, padding=1),
                       nn.LeakyReLU(0.2)]
        layers += [nn.Conv2d(width, channels, 3, padding=1), nn.Sigmoid()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(F.leaky_relu(self.project(z), 0.2).view(-1, *self.start))


class Encoder(nn.Module):
    """Three stride-2 3x3 convs and a linear layer to the code's mean and log-variance (used only in training)."""

    def __init__(self, channels: int, size: tuple[int, int], latent_dim: int, width: int) -> None:
        super().__init__()
        h, w = size
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(width, 2 * width, 3, 2, 1),
            nn.LeakyReLU(0.2), nn.Conv2d(2 * width, 4 * width, 3, 2, 1), nn.LeakyReLU(0.2), nn.Flatten())
        self.head = nn.Linear(4 * width * (h // 8) * (w // 8), 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(self.body(x)).chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)


def public_crops(dataset: str, exclude: Sequence[str], channels: int, size: tuple[int, int], count: int,
                 generator: torch.Generator) -> torch.Tensor:
    """``count`` random crops of the public images at ``size``: ``dataset`` loaded at 4x the attack's side, minus
    the classes named in ``exclude``, resized to 1x to 4x the side (7 scales) and cut at random places, with random
    horizontal flips. Channels are averaged to gray or repeated to colour as ``channels`` asks."""
    h, w = size
    ds = load_dataset(dataset, size=4 * max(h, w))
    unknown = sorted(set(exclude) - set(ds.class_names))
    if unknown:
        raise ConfigError(f"exclude names {unknown}, which are not classes of {dataset!r}; expected some of "
                          f"{list(ds.class_names)}")
    keep = [i for i in range(len(ds)) if ds.class_names[int(ds.labels[i])] not in set(exclude)]
    if not keep:
        raise ConfigError(f"exclude leaves no public image of {dataset!r} to train the generator on")
    images = ds.images[torch.tensor(keep)]
    if images.shape[1] != channels:
        gray = images.mean(1, keepdim=True)
        images = gray if channels == 1 else gray.expand(-1, channels, -1, -1).contiguous()
    levels = [F.interpolate(images, size=(round(h * f), round(w * f)), mode="bilinear", antialias=True,
                            align_corners=False) for f in (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0)]
    crops = torch.empty((count, channels, h, w))
    for k in range(count):
        level = levels[int(torch.randint(len(levels), (1,), generator=generator))]
        i = int(torch.randint(len(images), (1,), generator=generator))
        top = int(torch.randint(level.shape[-2] - h + 1, (1,), generator=generator))
        left = int(torch.randint(level.shape[-1] - w + 1, (1,), generator=generator))
        crop = level[i, :, top : top + h, left : left + w]
        crops[k] = crop.flip(-1) if bool(torch.rand((), generator=generator) < 0.5) else crop
    return crops.clamp(0, 1)


def train_generator(dataset: str, exclude: Sequence[str], channels: int, size: tuple[int, int], latent_dim: int,
                    width: int, steps: int, seed: int) -> dict[str, torch.Tensor]:
    """The decoder's weights after ``steps`` Adam steps (batch 32, lr 2e-3, cosine decay) of a VAE on ``public_crops``:
    squared error summed over pixels plus the code's KL divergence to a standard normal. Deterministic in
    ``seed``; the global random state is left as it was."""
    gen = torch.Generator().manual_seed(seed)
    bank = public_crops(dataset, exclude, channels, size, min(8192, 32 * steps), gen)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        decoder, encoder = Decoder(channels, size, latent_dim, width), Encoder(channels, size, latent_dim, width)
        params = list(decoder.parameters()) + list(encoder.parameters())
        opt = torch.optim.Adam(params, lr=2e-3)
        for step in range(steps):
            for group in opt.param_groups:  # cosine decay to 0 over the run
                group["lr"] = 2e-3 * 0.5 * (1 + math.cos(math.pi * step / steps))
            x = bank[torch.randint(len(bank), (32,), generator=gen)]
            mu, logvar = encoder(x)
            z = mu + torch.randn(mu.shape, generator=gen) * (0.5 * logvar).exp()
            recon = decoder(z)
            kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
            loss = ((recon - x).pow(2).flatten(1).sum(1) + kl).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return decoder.state_dict()


def public_generator(dataset: str, exclude: Sequence[str], channels: int, size: tuple[int, int], latent_dim: int,
                     width: int, steps: int, seed: int) -> Decoder:
    """The trained decoder for these settings, trained once and cached (``cache_dir()/generators``)."""
    recipe = {"dataset": dataset, "exclude": sorted(exclude), "channels": channels, "size": list(size),
              "latent_dim": latent_dim, "width": width, "steps": steps, "seed": seed, "v": RECIPE_VERSION}
    decoder = Decoder(channels, size, latent_dim, width)
    weights = cached_weights(
        "generators", recipe,
        lambda: train_generator(dataset, exclude, channels, size, latent_dim, width, steps, seed),
        decoder.state_dict())
    decoder.load_state_dict(weights)
    return decoder


@dataclass
class GenerativeImagePrior(DeepImagePrior):
    """GIAS (Jeon et al. 2021) with a locally trained VAE decoder: the best of ``init_candidates`` standard-normal
    codes, Adam (``lr``) on the codes for ``latent_share`` of the iterations (and of ``time_limit_s``), then Adam
    (``generator_lr``) on the decoder's weights from the best code for the rest. The generator: ``latent_dim``,
    ``width``, ``train_steps`` steps on crops of ``public`` less the classes in ``exclude``, ``generator_seed``."""

    name: ClassVar[str] = "gias"
    iterations: int = 1000
    lr: float = 0.05
    generator_lr: float = 1e-4
    latent_share: float = 0.5
    init_candidates: int = 16
    width: int = 16
    latent_dim: int = 64
    train_steps: int = 1500
    generator_seed: int = 0
    public: str = "photos"
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.public, str) or not self.public:
            raise ConfigError(f"attack 'gias': public must name a dataset (as load_dataset takes), got {self.public!r}")
        if isinstance(self.exclude, str) or not all(isinstance(e, str) for e in self.exclude):
            raise ConfigError(f"attack 'gias': exclude must be a list of class names, got {self.exclude!r}")
        self.exclude = tuple(self.exclude)

    def generator(self, obs: Observation) -> Decoder:
        """The cached decoder for ``obs``'s image shape (trained on first use)."""
        c, h, w = obs.input_shape
        return public_generator(self.public, tuple(self.exclude), c, (h, w), self.latent_dim, self.width,
                                self.train_steps, self.generator_seed)

    def reconstruct(
        self,
        obs: Observation,
        *,
        device: torch.device | str = "cpu",
        seed: int | None = None,
        callback: Callback | None = None,
        progress: bool = False,
    ) -> Reconstruction:
        labels = self.resolve_labels(obs)
        if labels is None:
            raise ConfigError("the generative prior needs labels 'auto', 'infer' or 'leaked', not 'soft'")
        decoder = self.generator(obs)  # before the clock: trained once per setting, like a pretrained model
        start = time.perf_counter()
        device = torch.device(device)
        decoder = decoder.to(device)
        config = self.engine(obs)
        matcher = UpdateMatcher([obs], config, device)
        ys = labels.to(device).long()
        gen = torch.Generator(device="cpu").manual_seed(0 if seed is None else seed)
        codes = torch.randn((self.init_candidates, obs.batch_size, self.latent_dim), generator=gen).to(device)
        with torch.no_grad():
            first = torch.stack([obs.inputs.to_model(decoder(z)) for z in codes])
            values = matcher.values(first[None], ys.view(1, 1, -1).expand(1, len(codes), -1), False)[0]
        z = codes[int(torch.nan_to_num(values, nan=float("inf")).argmin())].clone().requires_grad_(True)
        for p in decoder.parameters():
            p.requires_grad_(False)
        search = GeneratorSearch(obs, matcher, ys, start, None, callback)
        latent_iterations = max(1, round(self.latent_share * self.iterations))
        limit = None if self.time_limit_s is None else self.latent_share * self.time_limit_s
        search.time_limit_s = limit
        search.run(lambda: decoder(z), [z], self.stage(config, latent_iterations, self.lr), keep=[z])
        latent_done = len(search.trace)
        if self.iterations > latent_iterations and not search.stopped:
            with torch.no_grad():
                z.copy_(search.best_tensors[0])
            z.requires_grad_(False)
            for p in decoder.parameters():
                p.requires_grad_(True)
            search.time_limit_s = self.time_limit_s
            search.run(lambda: decoder(z), list(decoder.parameters()),
                       self.stage(config, self.iterations - latent_iterations, self.generator_lr))
        return search.reconstruction(self.name, self.settings(), labels, {
            "latent_iterations": latent_done,
            "generator_parameters": sum(p.numel() for p in decoder.parameters())})

    @staticmethod
    def stage(config: EngineConfig, iterations: int, lr: float) -> EngineConfig:
        """The engine's schedule over one stage's iterations and step size."""
        return dataclasses.replace(config, iterations=iterations, lr=lr)


ATTACKS.register("gias")(GenerativeImagePrior)
