"""DAGER on a train-mode step with dropout on (the transformers default 0.1), recorded with ``gradleak.record``:
the first layer's input is masked, and the masked test (``attacks.text.dropout``) finds the records again."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from gradleak.attacks import ATTACKS
from gradleak.attacks.text.dager import architecture
from gradleak.attacks.text.dropout import masked_distance, widened_projector
from gradleak.attacks.text.spans import Span
from gradleak.errors import ConfigError
from gradleak.recorder import record
from gradleak.text.corpus import private_records
from gradleak.text.metrics import score_text
from gradleak.text.models import text_model_spec
from gradleak.text.tokenizer import load_tokenizer
from gradleak.text.victim import encode_records

pytest.importorskip("transformers")

pytestmark = pytest.mark.numerics  # span ranks and the masked test's rounding floor


def _step(name: str, batch: int, max_len: int, dropout: float = 0.1):
    """One causal-LM fine-tuning step of a GPT-2 from its config, in train mode, recorded as a user would."""
    torch.set_num_threads(1)
    tok = load_tokenizer("bpe", 2048)
    records = private_records(batch, seed=1000)
    ids = encode_records(tok, records, max_len)
    ids[ids[:, -1] != tok.pad_id, -1] = tok.eos_id  # cut records end with their end-of-sequence token
    torch.manual_seed(0)
    model = text_model_spec(name, tok.vocab_size, tok.pad_id, eos_id=tok.eos_id, dropout=dropout).build().train()
    with record(model, ids, tokenizer=tok) as rec:
        mask = (ids != tok.pad_id).long()
        model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss.backward()
    return rec.observation, ids, tok, records


def _scores(recon, ids, tok, records):
    return score_text(recon.inputs, ids, tok.decode, pad_id=tok.pad_id, ignore_ids=(tok.eos_id,), records=records)


def test_dropout_on_gpt2_is_recovered_by_the_masked_layer1_test(assert_text_leaks) -> None:
    """gpt2-tiny (width 64), one record cut to 16 tokens, embedding/attention/residual dropout 0.1 in a train-mode
    step: the masked test certifies one token a position and the record comes back exactly. The same update read
    as if the step ran in eval mode (no masks searched) certifies nothing: dropout is what broke DAGER."""
    obs, ids, tok, records = _step("gpt2-tiny", 1, 16)
    assert obs.model_mode == "train"
    recon = ATTACKS.build("dager").reconstruct(obs)
    scores = _scores(recon, ids, tok, records)
    means = scores.means()
    assert means["exact"] == 1.0 and means["rouge2"] == 1.0, means
    assert recon.details["dropout"] == 0.1 and recon.details["records_certified"] == 1
    assert_text_leaks(scores, obs, ids, tok)
    plain = ATTACKS.build("dager").reconstruct(dataclasses.replace(obs, model_mode="eval"))
    assert _scores(plain, ids, tok, records).means()["rouge1"] < 0.2
    assert plain.details["sequences_found"] == 0 and plain.details["records_certified"] == 0


def test_masked_distance_separates_the_true_tokens_from_the_rest() -> None:
    """gpt2-mini (width 256), batch 2 (94 tokens): at each of the first positions the records' tokens sit at the
    rounding floor of the masked test and every other vocabulary entry above 0.05 (measured 0.0 and >= 0.06)."""
    obs, ids, tok, _ = _step("gpt2-mini", 2, 24)
    arch = architecture(obs.build_model().eval(), obs.gradient_estimate())
    span = arch.span(0)
    for p in range(3):
        x, projector = arch.masked_candidates(p, span)
        d = masked_distance(x, projector)
        truth = sorted(set(ids[:, p].tolist()))
        others = torch.ones(len(d), dtype=torch.bool)
        others[truth] = False
        assert float(d[truth].max()) < 1e-3 and float(d[others].min()) > 0.05, (p, d[truth], d[others].min())


def test_masked_distance_finds_the_mask_of_a_dropped_input() -> None:
    """The test's own arithmetic: a span holding the masked copy ``m * x`` of a vector (a tenth of it dropped) and
    11 other directions in 96 dimensions: ``x`` itself is 0.2-0.4 from the span, its best mask ~0; another vector
    stays far."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, generator=g, dtype=torch.float64)
    keep = (torch.rand(96, generator=g) > 0.1).double()
    basis = torch.linalg.qr(torch.cat([(keep * x)[:, None], torch.randn(96, 11, generator=g, dtype=torch.float64)],
                                      dim=1))[0]
    span = Span(basis, torch.ones(12, dtype=torch.float64))
    other = torch.randn(96, generator=g, dtype=torch.float64)
    assert float(span.distance(x[None])[0]) > 0.1
    d = masked_distance(torch.stack([x, other]), widened_projector(span, []))
    assert float(d[0]) < 1e-8 and float(d[1]) > 0.3, d


def test_text_model_spec_refuses_a_bad_dropout_rate() -> None:
    with pytest.raises(ConfigError, match="dropout must be a rate in"):
        text_model_spec("gpt2-tiny", 2048, 0, dropout=1.5)


def test_dropout_on_a_bert_classifier_is_recovered_and_certified(assert_text_leaks) -> None:
    """bert-tiny (width 64), one record cut to 16 tokens, classified in a train-mode step with dropout 0.1
    (after the embedding norm): the masked test ranks the bag at each position, every pick under the threshold."""
    torch.set_num_threads(1)
    tok = load_tokenizer("bpe", 2048)
    records = private_records(1, seed=1000)
    ids = encode_records(tok, records, 16)
    ids[ids[:, -1] != tok.pad_id, -1] = tok.eos_id
    torch.manual_seed(0)
    model = text_model_spec("bert-tiny", tok.vocab_size, tok.pad_id, eos_id=tok.eos_id, dropout=0.1,
                            num_labels=4).build().train()
    labels = torch.tensor([r.label for r in records])
    with record(model, (ids, labels), tokenizer=tok) as rec:
        model(input_ids=ids, attention_mask=(ids != tok.pad_id).long(), labels=labels).loss.backward()
    recon = ATTACKS.build("dager").reconstruct(rec.observation)
    scores = _scores(recon, ids, tok, records)
    assert scores.means()["exact"] == 1.0, scores.means()
    assert recon.details["dropout"] == 0.1 and recon.details["records_certified"] == 1
    assert_text_leaks(scores, rec.observation, ids, tok)


def test_the_leaked_bag_under_dropout_is_the_records_tokens() -> None:
    """The bag the baselines draw from (``token_bag``) comes from the masked test too: under dropout the plain
    span test finds nothing, and the bag guesses would be empty (too easy to beat)."""
    from gradleak.attacks.text.token_bag import token_bag

    obs, ids, tok, _ = _step("gpt2-tiny", 1, 16)
    expected = set(ids[(ids != tok.pad_id) & (ids != tok.eos_id)].tolist())
    assert token_bag(obs) == expected
