"""Text scores: matching, ROUGE, exact sequences, secrets recovered."""

from __future__ import annotations

import torch

from gradleak.text.corpus import Record
from gradleak.text.metrics import score_text
from gradleak.text.tokenizer import load_tokenizer


def test_scores_match_sequences_and_count_secrets() -> None:
    tok = load_tokenizer("byte")
    records = [Record("Alice alice@example.com", (("name", 0, 5), ("email", 6, 23))),
               Record("Bob calls 555 0100", (("name", 0, 3), ("phone", 10, 18)))]
    truth = tok.batch([r.text for r in records], 24)
    # recovered in the other order; the second is right, the first lost its email domain
    recovered = tok.batch(["Bob calls 555 0100", "Alice alice@exam"], 24)
    s = score_text(recovered, truth, tok.decode, pad_id=tok.pad_id, records=records)
    assert s.assignment == [1, 0]
    assert s.exact == [False, True]
    assert s.secrets_found == [1, 2] and s.secrets_total == [2, 2]
    assert s.means()["secrets_recovered"] == 0.75
    assert s.rouge1[1] == 1.0 and 0 < s.rouge1[0] < 1.0
    assert s.token_accuracy[0] == len("Alice alice@exam") / len("Alice alice@example.com")
    assert torch.equal(truth, tok.batch([r.text for r in records], 24))
