"""The contract every registered attack keeps, checked over the whole registry (as torchattacks tests its zoo).

- its settings: built with defaults; every numeric setting has a stated range (``attacks.base.SETTING_RANGES``)
  and a value outside it is refused when the attack is built, by ``check_attack_settings`` too (so a sweep
  refuses it before Ray starts), before any ``reconstruct``;
- its inputs: an observation of a kind or task it does not handle is refused before any work, and on the smallest
  victim it handles it returns inputs of the observation's shape and kind (pixels in [0, 1], token ids below the
  vocabulary);
- its test (the mutation check of the honest-scores issue): the attack's test module judges the attack with the
  shared leak assertion (``assert_leaks`` / ``assert_text_leaks`` of tests/conftest.py), and that assertion fails
  when the attack's output is replaced by each guess the attacker could make without the update.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import typing
from pathlib import Path

import pytest
import torch

import gradleak.attacks.text  # noqa: F401  (registers the text attacks)
from gradleak.attacks import ATTACKS
from gradleak.attacks.base import SETTING_RANGES
from gradleak.baselines import ImageGuesses
from gradleak.config import check_attack_settings
from gradleak.errors import ConfigError
from gradleak.experiment import ExperimentConfig, make_victim, public_set
from gradleak.text.metrics import score_text, text_guesses

NAMES = sorted(ATTACKS.names())
HERE = Path(__file__).parent
#: the test module that judges each attack
TEST_MODULES = {
    "dlg": "test_dlg.py", "idlg": "test_dlg.py", "inverting": "test_inverting.py", "fedavg": "test_fedavg.py",
    "dip": "test_deep_prior.py", "gias": "test_generative_prior.py",
    "gradinversion": "test_gradinversion.py", "imprint": "test_imprint.py", "linear": "test_analytic.py",
    "rgap": "test_rgap.py", "spear": "test_spear.py", "cocktail": "test_cocktail.py",
    "dager": "text/test_dager.py", "subspace": "text/test_subspace.py", "tag": "text/test_tag.py",
    "lamp": "text/test_lamp.py", "pursuit": "text/test_pursuit.py",
}
#: attacks that leak nothing in the suite's budget (measured; README), whose tests instead beat every guess on what
#: the attack optimises, built from the same guesses (``text_guesses``): replacing the output by a guess fails them
NO_LEAK_IN_BUDGET = {"tag": "text_guesses", "lamp": "text_guesses"}


def _numeric(hint: object) -> bool:
    args = set(typing.get_args(hint)) - {type(None)} if typing.get_origin(hint) is typing.Union or \
        type(hint).__name__ == "UnionType" else {hint}
    return bool(args) and args <= {int, float}


def _numeric_settings(name: str) -> list[str]:
    factory = ATTACKS.get(name)
    hints = typing.get_type_hints(factory)
    return [f.name for f in dataclasses.fields(factory) if f.init and _numeric(hints[f.name])]


def test_the_registry_is_covered() -> None:
    assert set(TEST_MODULES) == set(NAMES), "a registered attack without a test module named here"
    print("attacks under contract:", ", ".join(NAMES))


@pytest.mark.parametrize("name", NAMES)
def test_every_numeric_setting_has_a_stated_range(name: str) -> None:
    missing = [s for s in _numeric_settings(name) if s not in SETTING_RANGES]
    assert not missing, f"{name}: numeric settings without a range in SETTING_RANGES: {missing}"


def _outside(setting: str) -> list[object]:
    low, high, low_open, high_open, integer = SETTING_RANGES[setting]
    bad: list[object] = [float("nan"), "3"]
    bad.append((low if low_open else low - 1) if integer or not low_open else low)
    if not math.isinf(high):
        bad.append(high if high_open else high + 1)
    if integer:
        bad.append(1.5)
    return bad


@pytest.mark.parametrize("name", NAMES)
def test_builds_with_defaults_and_refuses_each_bad_setting_when_built(name: str) -> None:
    ATTACKS.build(name)
    for setting in _numeric_settings(name):
        for value in _outside(setting):
            with pytest.raises(ConfigError, match=setting):
                ATTACKS.build(name, **{setting: value})
            with pytest.raises(ConfigError):
                check_attack_settings(name, {setting: value})


@pytest.fixture(scope="module")
def image_case():
    config = ExperimentConfig(dataset="faces", image_size=16, num_classes=100, indices=(0, 1))
    obs, truth = make_victim(config)
    return obs, truth, public_set(config, obs)[0]


@pytest.fixture(scope="module")
def text_case():
    from gradleak.text.victim import text_victim

    return text_victim("bert-tiny", 1, seed=0)


@pytest.fixture(scope="module")
def causal_case():
    from gradleak.text.victim import text_victim

    return text_victim("gpt2-tiny", 1, seed=0)


@pytest.mark.parametrize("name", NAMES)
def test_refuses_an_input_kind_or_task_it_does_not_handle_before_any_work(name: str, image_case, text_case,
                                                                          causal_case) -> None:
    attack = ATTACKS.build(name)
    cases = (("image", image_case[0]), ("tokens", text_case.observation), ("tokens", causal_case.observation))
    refused = 0
    for kind, obs in cases:
        if kind not in attack.input_kinds or obs.task.kind not in attack.tasks:
            with pytest.raises(ConfigError, match="handles"):
                attack.reconstruct(obs)
            refused += 1
    assert refused >= 1  # every attack handles a strict subset of (images, classified text, causal LM text)


def _judged_by_the_shared_assertion(name: str) -> bool:
    tree = ast.parse((HERE / TEST_MODULES[name]).read_text(encoding="utf-8"))
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | \
        {a.arg for n in ast.walk(tree) if isinstance(n, ast.arguments) for a in n.args}
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    text = name in ("dager", "subspace", "pursuit")
    needed = NO_LEAK_IN_BUDGET.get(name) or ("assert_text_leaks" if text else "assert_leaks")
    return name in strings and needed in names


@pytest.mark.parametrize("name", NAMES)
def test_the_attacks_test_fails_when_the_attack_returns_a_guess(name: str, image_case, text_case, assert_leaks,
                                                                assert_text_leaks) -> None:
    """The mutation check: each guess, put where the attack's output goes, fails the shared assertion."""
    assert _judged_by_the_shared_assertion(name), f"{TEST_MODULES[name]} does not judge {name!r} by the guesses"
    attack = ATTACKS.build(name)
    if "image" in attack.input_kinds:
        obs, truth, public = image_case
        guesses = ImageGuesses.of(obs.inputs, public)
        outputs = {k: v.unsqueeze(0).expand_as(truth.inputs).clone() for k, v in guesses.constant.items()}
        nearest = torch.cdist(truth.inputs.flatten(1), public.flatten(1)).argmin(1)
        outputs["public set (best)"] = public[nearest]
        for guess, pixels in outputs.items():
            with pytest.raises(AssertionError):
                assert_leaks(pixels, None, truth, obs, public)
    else:
        tok = text_case.tokenizer
        truth_ids = text_case.truth.inputs
        for guess, batches in text_guesses(text_case.observation, truth_ids, tok).items():
            scores = score_text(batches[0], truth_ids, tok.decode, pad_id=tok.pad_id, ignore_ids=(tok.eos_id,))
            with pytest.raises(AssertionError):
                assert_text_leaks(scores, text_case.observation, truth_ids, tok)


def _image(model: str, **kw):
    base = dict(dataset="faces", image_size=16, num_classes=100, indices=(0, 1), model=model)
    base.update(kw)
    return make_victim(ExperimentConfig(**base))  # type: ignore[arg-type]


#: per attack: the smallest victim it handles and settings that keep the run to a second or two
SMALL_CASES = {
    "dlg": (lambda: _image("lenet"), {"iterations": 2}),
    "idlg": (lambda: _image("lenet"), {"iterations": 2}),
    "inverting": (lambda: _image("lenet"), {"iterations": 2}),
    "dip": (lambda: _image("lenet"), {"iterations": 2}),
    "gias": (lambda: _image("lenet"), {"iterations": 2, "train_steps": 2, "width": 2, "latent_dim": 2,
                                       "init_candidates": 1}),
    "gradinversion": (lambda: _image("lenet"), {"iterations": 2, "restarts": 1, "warmup": 0}),
    "fedavg": (lambda: _image("lenet", protocol="fedavg", local_steps=2, local_batch_size=1), {"iterations": 2}),
    "linear": (lambda: _image("mlp"), {}),
    "spear": (lambda: _image("mlp"), {"guide_rounds": 0, "max_trials": 200}),
    "cocktail": (lambda: _image("mlp", model_kwargs={"hidden": [64]}), {"ica_iters": 5, "iters": 2}),
    "rgap": (lambda: _image("cnn6", image_size=32, indices=(0,)), {}),
    "imprint": (lambda: make_victim(ExperimentConfig(dataset="faces", image_size=16, batch_size=4, clients=2,
                                                     model="imprint", model_kwargs={"base": "mlp", "bins": 16})), {}),
    "dager": ("bert-tiny", {}),
    "tag": ("bert-tiny", {"steps": 2}),
    "lamp": ("bert-tiny", {"steps": 2, "init_candidates": 2, "candidates": 2, "swap_every": 1, "prior_steps": 2}),
    "subspace": ("gpt2-tiny", {}),
    "pursuit": ("gpt2-tiny", {}),
}


def test_every_attack_has_a_small_case() -> None:
    assert set(SMALL_CASES) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_returns_inputs_of_the_observations_shape_and_kind(name: str) -> None:
    """Images: float pixels in [0, 1] shaped (B, C, H, W); tokens: integer ids below the vocabulary, (B, L)."""
    from gradleak.text.victim import text_victim

    make, settings = SMALL_CASES[name]
    if isinstance(make, str):
        case = text_victim(make, 1, seed=0)
        obs = case.observation
        if name in ("tag", "lamp"):
            lengths = (case.truth.inputs != case.tokenizer.pad_id).sum(1).tolist()
            obs = obs.with_update(obs.update, lengths=lengths)
    else:
        obs, _ = make()
    recon = ATTACKS.build(name, **settings).reconstruct(obs, seed=0)
    if obs.inputs.kind == "image":
        assert recon.inputs.shape == (obs.batch_size, *obs.input_shape)
        assert recon.inputs.is_floating_point() and 0 <= float(recon.inputs.min()) <= float(recon.inputs.max()) <= 1
    else:
        assert recon.inputs.ndim == 2 and recon.inputs.shape[1] == obs.inputs.seq_len
        assert not recon.inputs.is_floating_point()
        assert 0 <= int(recon.inputs.min()) and int(recon.inputs.max()) < obs.inputs.vocab_size
    if recon.labels is not None:
        assert recon.labels.shape[0] == recon.inputs.shape[0] and not recon.labels.is_floating_point()
