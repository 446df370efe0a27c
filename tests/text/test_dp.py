"""Opacus DP-SGD on tiny GPT-2 and BERT: the DP gradient against per-record autograd, noise, and DAGER on it."""

from __future__ import annotations

import pytest
import torch

from gradleak.defenses import build_defense
from gradleak.errors import ConfigError
from gradleak.training_task import Task, forward
from gradleak.text.corpus import private_records
from gradleak.defenses.dp import dp_text_gradient, per_example_loss
from gradleak.utility import text_defense_cost
from gradleak.text.models import text_model_spec
from gradleak.text.tokenizer import load_tokenizer
from gradleak.text.victim import encode_records

pytest.importorskip("opacus")


@pytest.fixture(autouse=True)
def one_thread():
    """Two shared cores: one thread each is faster than two fighting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _setup(model: str, n: int = 3):
    tok = load_tokenizer("bpe", 512)
    records = private_records(n, seed=5)
    ids = encode_records(tok, records)
    mask = (ids != tok.pad_id).long()
    spec = text_model_spec(model, tok.vocab_size, tok.pad_id, eos_id=tok.eos_id, num_labels=4)
    torch.manual_seed(0)
    net = spec.build().train()
    labels = torch.tensor([r.label for r in records])
    task = Task.classification(4) if model.startswith("bert") else Task.causal_lm()
    return net, ids, mask, labels, task


def _clipped_reference(net, ids, mask, labels, task, clip: float) -> dict[str, torch.Tensor]:
    """(1/B) sum_i g_i min(1, C/|g_i|) from one plain autograd call per record."""
    params = {n: p for n, p in net.named_parameters() if p.requires_grad}
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for i in range(ids.shape[0]):
        x, m = ids[i:i + 1], mask[i:i + 1]
        logits = forward(net, x, m)
        loss = per_example_loss(logits, x, labels[i:i + 1], task, m).sum()
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params.values())]
        norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
        factor = min(1.0, clip / (float(norm) + 1e-6))
        for n, g in zip(params, grads):
            total[n] += g * factor
    return {n: t / ids.shape[0] for n, t in total.items()}


@pytest.mark.parametrize("model", ["gpt2-tiny", "bert-tiny"])
@pytest.mark.parametrize("clip", [1e6, 0.05])
def test_noiseless_dp_gradient_is_the_mean_of_clipped_per_record_gradients(model: str, clip: float) -> None:
    """GPT-2's Conv1D goes through Opacus's torch.func fallback, its tied embedding accumulates both uses."""
    net, ids, mask, labels, task = _setup(model)
    dp = dp_text_gradient(net, ids, labels, task, build_defense("dpsgd", noise_multiplier=0.0, max_grad_norm=clip),
                          mask=mask, generator=torch.Generator().manual_seed(0))
    ref = _clipped_reference(net, ids, mask, labels, task, clip)
    assert set(dp) == {n for n in ref if float(ref[n].abs().max()) > 0 or n in dp}
    for name, g in dp.items():
        torch.testing.assert_close(g, ref[name], rtol=1e-3, atol=1e-6, msg=name)
    if clip < 1:  # clipping binds: the result differs from the plain mean gradient
        plain = _clipped_reference(net, ids, mask, labels, task, 1e6)
        assert max(float((dp[n] - plain[n]).abs().max()) for n in dp) > 1e-3


def test_dp_noise_has_the_stated_scale_and_follows_the_seed() -> None:
    net, ids, mask, labels, task = _setup("gpt2-tiny")
    sigma, clip = 2.0, 0.5
    defense = build_defense("dpsgd", noise_multiplier=sigma, max_grad_norm=clip)
    runs = [dp_text_gradient(net, ids, labels, task, defense, mask=mask, generator=torch.Generator().manual_seed(s))
            for s in (1, 1, 2)]
    ref = _clipped_reference(net, ids, mask, labels, task, clip)
    name = "transformer.h.0.mlp.c_fc.weight"
    noise = runs[0][name] - ref[name]
    expected = sigma * clip / ids.shape[0]
    assert abs(float(noise.std()) / expected - 1) < 0.05
    torch.testing.assert_close(runs[0][name], runs[1][name])
    assert not torch.equal(runs[0][name], runs[2][name])


def test_text_victim_under_dpsgd_shares_the_dp_gradient_and_dager_reads_clipping_only() -> None:
    """Clipping alone rescales each record's gradient: the span is unchanged and DAGER stays exact; noise
    (sigma = 0.5) fills the layer-1 span, where DAGER's test says nothing."""
    from gradleak.attacks import ATTACKS
    from gradleak.attacks.text.dager import architecture
    from gradleak.text.metrics import score_text
    from gradleak.text.victim import text_victim

    clipped = text_victim("gpt2-mini", 1, seed=0, defense=build_defense("dpsgd", noise_multiplier=0.0,
                                                                        max_grad_norm=0.1))
    noised = text_victim("gpt2-mini", 1, seed=0, defense=build_defense("dpsgd", noise_multiplier=0.5,
                                                                       max_grad_norm=0.1))
    for case in (clipped, noised):
        assert case.observation.info["defense"]["name"] == "dpsgd"
    # one record, no noise: the shared gradient is that record's gradient clipped to norm 0.1 (it is larger)
    norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in clipped.observation.update.values())))
    assert 0.0999 < norm < 0.1001
    tok = clipped.tokenizer
    recon = ATTACKS.build("dager").reconstruct(clipped.observation)
    rouge1 = score_text(recon.inputs, clipped.truth.inputs, tok.decode, pad_id=tok.pad_id, ignore_ids=(tok.eos_id,),
                        records=clipped.records).means()["rouge1"]
    assert rouge1 >= 0.99
    obs = noised.observation
    assert architecture(obs.build_model().eval(), obs.gradient_estimate()).span(0, 1e-8).full


def test_text_victim_refuses_microbatch_dp() -> None:
    from gradleak.text.victim import text_victim

    with pytest.raises(ConfigError, match="only Opacus DP-SGD"):
        text_victim("gpt2-tiny", 1, seed=0, defense=build_defense("microbatch_dpsgd"))


def test_dp_sgd_trains_a_tiny_decoder_at_a_stated_epsilon_and_costs_perplexity(assert_matches_google) -> None:
    """Opacus DP-SGD at every step: epsilon from the RDP accountant (finite, larger with less noise) and a
    perplexity above the undefended run's."""

    kw = dict(model="gpt2-tiny", steps=8, batch_size=4, train_records=32, test_records=16, seq_len=32)
    clean = text_defense_cost(None, **kw)
    strong = text_defense_cost(build_defense("dpsgd", noise_multiplier=1.0, max_grad_norm=0.5), **kw)
    weak = text_defense_cost(build_defense("dpsgd", noise_multiplier=0.5, max_grad_norm=0.5), **kw)
    assert clean.epsilon is None and strong.metric == "perplexity"
    assert 0 < strong.epsilon < weak.epsilon < float("inf")
    # the reported epsilon is Google's dp-accounting figure for the Poisson batches that ran: rate 4/32, 8 steps
    assert_matches_google(strong.epsilon, 1.0, 4 / 32, 8)
    assert_matches_google(weak.epsilon, 0.5, 4 / 32, 8)
    assert strong.value > clean.value
