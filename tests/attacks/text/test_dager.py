"""DAGER on a GPT-2-small-shaped decoder: a batch of 8 private records recovered exactly, random and trained."""

from __future__ import annotations

import pytest
import torch

from gradleak.attacks import ATTACKS
from gradleak.attacks.text import token_bag
from gradleak.attacks.text.dager import architecture
from gradleak.errors import ConfigError
from gradleak.recorder import record
from gradleak.text.metrics import score_text
from gradleak.text.models import text_model_spec
from gradleak.text.tokenizer import load_tokenizer
from gradleak.text.victim import text_victim
from gradleak.training_task import Task

pytest.importorskip("transformers")

pytestmark = pytest.mark.numerics  # rank/span decisions, exact recovery: .ci/run runs these on two CPU paths


def _score(case, recon):
    tok = case.tokenizer
    return score_text(recon.inputs, case.truth.inputs, tok.decode, pad_id=tok.pad_id, ignore_ids=(tok.eos_id,),
                      records=case.records)


@pytest.fixture(scope="module")
def random_case():
    return text_victim("gpt2-small", 8, seed=0)


@pytest.mark.parametrize("trained", [False, True])
def test_dager_recovers_a_batch_of_8_records_exactly(random_case, trained: bool, assert_text_leaks) -> None:
    """Trained: 3 AdamW steps on 512 other records here, 4 records a step (AdamW moves every weight by about the
    learning rate whatever the batch, and a quarter of the batch is a quarter of the suite's pre-training time);
    benchmarks/bench_text.py runs a longer-trained model."""
    case = text_victim("gpt2-small", 8, seed=0, pretrain_steps=3, pretrain_batch=4) if trained else random_case
    recon = ATTACKS.build("dager").reconstruct(case.observation)
    scores = _score(case, recon)
    means = scores.means()
    assert means["rouge1"] >= 0.99 and means["rouge2"] >= 0.99, means
    assert means["exact"] >= 0.9, means
    # every record beats the leaked token bag's guesses (random draws, public-frequency order) by 0.2 ROUGE-1
    assert_text_leaks(scores, case.observation, case.truth.inputs, case.tokenizer)
    assert means["secrets_recovered"] >= 0.9, means
    assert not recon.details["layer1_full"] and recon.details["sequences_found"] == 8


def test_token_bag_of_8_records_is_exact(random_case) -> None:
    """GPT-2 ties its embedding to the output layer, so the bag comes from the first layer's span. The last token
    of each record (the end-of-sequence marker) feeds no loss term in causal LM and is invisible; the records'
    own tokens are the bag, exactly."""
    case = random_case
    ids = case.truth.inputs
    tok = case.tokenizer
    expected = set(ids[(ids != tok.pad_id) & (ids != tok.eos_id)].tolist())
    assert token_bag(case.observation) == expected


def test_token_bag_of_an_untied_encoder_is_its_nonzero_embedding_rows() -> None:
    case = text_victim("bert-tiny", 8, seed=1)
    ids = case.truth.inputs
    # every id of the records, and no other; BERT's padding row (padding_idx) never receives a gradient
    assert token_bag(case.observation) == set(ids.flatten().tolist()) - {case.tokenizer.pad_id}


def test_layer2_shortcut_equals_full_forwards(random_case) -> None:
    obs = random_case.observation
    arch = architecture(obs.build_model().eval(), obs.gradient_estimate())
    prefixes = [[5, 9, 11], [7, 7, 2]]
    tokens = [3, 100, 1999]
    fast = arch.second_inputs_extending(prefixes, tokens)
    for a, prefix in enumerate(prefixes):
        slow = arch.second_inputs(torch.tensor([prefix + [v] for v in tokens]))
        torch.testing.assert_close(fast[a], slow, rtol=1e-4, atol=1e-5)


def test_dager_refuses_images(face_observation) -> None:
    obs, _ = face_observation
    with pytest.raises(ConfigError, match="handles tokens inputs, not image"):
        ATTACKS.build("dager").reconstruct(obs)


@pytest.mark.parametrize("lora_steps", [0, 3])
def test_dager_recovers_a_record_from_a_lora_only_update(lora_steps: int) -> None:
    """LoRA rank 64 on gpt2-mini (width 256), one record of ~47 tokens: fewer tokens than the rank. Fresh adapter
    (B = 0, dL/dA = 0): the B test through A; after 3 steps (B != 0): dL/dA spans the inputs."""
    case = text_victim("gpt2-mini", 1, seed=0, lora_rank=64, lora_steps=lora_steps)
    grads = case.observation.update
    assert all("lora_" in k for k in grads)  # only the adapter is shared
    a_grad = next(v for k, v in grads.items() if "h.0.attn.c_attn.lora_A" in k)
    assert (float(a_grad.abs().max()) == 0.0) == (lora_steps == 0)
    recon = ATTACKS.build("dager").reconstruct(case.observation)
    means = _score(case, recon).means()
    assert means["rouge1"] >= 0.99 and means["exact"] == 1.0 and means["secrets_recovered"] == 1.0, means
    assert recon.details["layer1_test"] == ("adapter B through A" if lora_steps == 0 else "weight gradient")


def test_lora_rank_below_the_token_count_leaves_the_span_full() -> None:
    """Rank 16 < ~47 tokens: the adapter's gradient spans all 16 directions and the test says nothing."""
    case = text_victim("gpt2-mini", 1, seed=0, lora_rank=16, lora_steps=3)
    tokens = int((case.truth.inputs != case.tokenizer.pad_id).sum())
    assert tokens > 16
    obs = case.observation
    span = architecture(obs.build_model().eval(), obs.gradient_estimate()).span(0)
    # measured: the 16th singular value of dL/dA sits 1.5e5 times above the float32 noise floor: full rank, clear
    assert span.full and span.rank == 16 and span.decision is not None and not span.decision.ambiguous


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dager_recovers_the_bert_tiny_record_exactly(seed: int, text_scores) -> None:
    """The batch-1 case TAG and LAMP are benchmarked on (random bert-tiny classifier, one bundled record of up to
    60 tokens, width 64). The classifier's loss reaches the non-first tokens only through attention, so their
    layer-1 query gradients sit near the float32 floor and the true inputs land 1e-3..5e-2 from the span: the old
    absolute threshold (1e-3) kept position 0 only (ROUGE-1 0.09). Ranking the token bag per position is exact."""
    case = text_victim("bert-tiny", 1, seed=seed)
    recon = ATTACKS.build("dager").reconstruct(case.observation)
    means = text_scores(case, recon.inputs)
    assert means["rouge1"] >= 0.99 and means["rouge2"] >= 0.99 and means["exact"] == 1.0, means
    assert means["secrets_recovered"] == 1.0, means


def test_dager_assembles_a_batch_of_2_encoder_records_exactly(text_scores) -> None:
    """bert-mini (width 256), batch 2 of bundled records: the layer-1 ranking misorders tokens at 3 positions and
    leaves which record holds which token open; the assembly's local search on the layer-2 span distance finds
    both records token for token. Without it (``assemble_sweeps=0``) at most one record is exact: which one the
    layer-1 ranking gets right by itself is the code path's choice (measured, plain: exact 0.0 and ROUGE-2 0.733
    on the default AVX-512 path, exact 0.5 and ROUGE-2 0.841 under MKL_CBWR=COMPATIBLE ATEN_CPU_CAPABILITY=
    default, at the layer-1 rank 94 cut at the gap and at the old rtol=1e-8 rank 143 alike; the assembled
    records are exact on both)."""
    case = text_victim("bert-mini", 2, seed=0)
    plain = text_scores(case, ATTACKS.build("dager", assemble_sweeps=0).reconstruct(case.observation).inputs)
    recon = ATTACKS.build("dager").reconstruct(case.observation)
    means = text_scores(case, recon.inputs)
    assert means["exact"] == 1.0 and means["rouge2"] == 1.0 and means["secrets_recovered"] == 1.0, means
    assert plain["exact"] <= 0.5 and plain["rouge2"] <= 0.9, plain  # measured 0.0/0.733 and 0.5/0.841
    assert recon.details["assembly_cost"] < recon.details["assembly_start"] / 3


def test_an_ambiguous_decoder_rank_is_resolved_by_the_layer2_test() -> None:
    """The decoder side of ``_choose_rank``: the layer-1 decision of a LoRA update (clear: rank 59, a drop of
    2.6e3) marked ambiguous by hand over ranks 57-61. Measured on both CPU paths: at 57 and 58 (true directions
    dropped) the layer-2 test certifies no sequence, at 59-61 the record, from the same 59 layer-1 candidates;
    the tie goes to the rank nearest the decision's own (59), and the scores are reported."""
    import dataclasses

    from gradleak.attacks.text.dager import DAGER

    case = text_victim("gpt2-mini", 1, seed=0, lora_rank=64, lora_steps=3)
    obs = case.observation
    arch = architecture(obs.build_model().eval(), obs.gradient_estimate())
    span = arch.span(0)
    assert span.decision is not None and span.rank == 59 and not span.decision.ambiguous
    span.decision = dataclasses.replace(span.decision, ambiguous=True, candidates=(57, 58, 59, 60, 61))
    details: dict = {}
    chosen = DAGER()._choose_rank(arch, span, obs, details)
    assert chosen.rank == 59, details
    scores = details["rank_candidates"]["layer1"]["scores"]
    assert scores["59"][0] == 1.0 and scores["57"][0] == 0.0, scores


@pytest.mark.parametrize("kind", ["gaussian", "fp16"])
def test_dager_defaults_recover_a_record_from_a_noised_or_fp16_update(kind: str, assert_text_leaks) -> None:
    """Gaussian noise 1e-6 or fp16 rounding on gpt2-mini's update (width 256, one record of 60 tokens): the
    rounding-floor rank decision sees noise in every direction (rank 256: nothing recovered before); the default
    settings now cut at the spectrum's clear drop below the token count (59) and widen the thresholds to the noise
    it leaves, and the record comes back exactly."""
    from gradleak.defenses import build_defense

    defense = build_defense("gaussian", std=1e-6) if kind == "gaussian" else build_defense("quantization",
                                                                                            kind="fp16")
    case = text_victim("gpt2-mini", 1, seed=0, defense=defense)
    recon = ATTACKS.build("dager").reconstruct(case.observation)
    scores = _score(case, recon)
    assert scores.means()["exact"] == 1.0, scores.means()
    assert recon.details["layer1_rank"] == 59 and recon.details["threshold_used"] > 1e-3
    assert_text_leaks(scores, case.observation, case.truth.inputs, case.tokenizer)


def test_the_last_token_of_records_without_an_end_token_comes_from_the_output_layer(assert_text_leaks) -> None:
    """Records recorded without an end-of-sequence token: the last token feeds no loss term and lies in no span,
    but it labels the position before it, so the tied output layer's gradient gives it (gpt2-tiny, 2 records)."""
    tok = load_tokenizer("bpe", 2048)
    rows = [tok.encode(t) for t in ("Refund to Anna Schmidt, account DE89 3704 0044",
                                    "Contact jo@example.org or call 555 0199 about the parcel")]
    length = max(map(len, rows))
    ids = torch.tensor([r + [tok.pad_id] * (length - len(r)) for r in rows])
    torch.manual_seed(0)
    net = text_model_spec("gpt2-tiny", tok.vocab_size, tok.pad_id, eos_id=tok.eos_id).build().train()
    with record(net, ids, tokenizer=tok) as rec:
        Task.causal_lm().loss(net, ids, None, (ids != tok.pad_id).long()).backward()
    recon = ATTACKS.build("dager").reconstruct(rec.observation)
    assert recon.details["last_token"].startswith("recovered"), recon.details["last_token"]
    got = {tuple(v for v in row.tolist() if v != tok.pad_id) for row in recon.inputs}
    assert got == {tuple(r) for r in rows}
    scores = score_text(recon.inputs, ids, tok.decode, pad_id=tok.pad_id)
    assert_text_leaks(scores, rec.observation, ids, tok)


def test_dager_refuses_a_negative_beam() -> None:
    with pytest.raises(ConfigError, match=r"beam must lie in \[0, inf\), got -1"):
        ATTACKS.build("dager", beam=-1)
    with pytest.raises(ConfigError, match="beam must be an integer, got 1.5"):
        ATTACKS.build("dager", beam=1.5)
