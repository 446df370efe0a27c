"""pursuit on a decoder whose batch holds more tokens than the model is wide, where DAGER's span test says nothing."""

from __future__ import annotations

import pytest

from gradleak.attacks import ATTACKS
from gradleak.attacks.text.dager import architecture
from gradleak.errors import ConfigError
from gradleak.text.metrics import score_text
from gradleak.text.victim import text_victim

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def wide_case():
    return text_victim("gpt2-tiny", 4, seed=0)


def test_pursuit_recovers_records_past_the_width_where_dagers_span_is_full(wide_case, assert_text_leaks) -> None:
    """gpt2-tiny (width 64), 4 records of 170 tokens: DAGER's layer-1 span leaves at most one of the 64 directions
    (rank 63), so its test passes every candidate; the output-embedding pursuit reads the records off the LM head's
    gradient (measured: ROUGE-1 0.66-0.84 per record against the bag's best guess 0.16)."""
    case = wide_case
    obs = case.observation
    assert int((case.truth.inputs != case.tokenizer.pad_id).sum()) > 64
    assert architecture(obs.build_model().eval(), obs.gradient_estimate()).span(0).rank >= 63
    recon = ATTACKS.build("pursuit").reconstruct(case.observation)
    tok = case.tokenizer
    scores = score_text(recon.inputs, case.truth.inputs, tok.decode, pad_id=tok.pad_id, ignore_ids=(tok.eos_id,),
                        records=case.records)
    # every record beats the leaked token bag's guesses (random draws, public-frequency order) by 0.2 ROUGE-1
    assert_text_leaks(scores, case.observation, case.truth.inputs, case.tokenizer)


def test_pursuit_refuses_bad_settings_and_lengths(wide_case) -> None:
    with pytest.raises(ConfigError, match="iters"):
        ATTACKS.build("pursuit", iters=-1)
    obs = wide_case.observation.with_update(wide_case.observation.update, lengths=[999] * 4)
    with pytest.raises(ConfigError, match="lengths"):
        ATTACKS.build("pursuit").reconstruct(obs)
