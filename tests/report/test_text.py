"""The sentences report shows each record as written: decoded whole, never token by token."""

from __future__ import annotations

import pytest
import torch

from gradleak.report.text import token_spans, write_text_report
from gradleak.text.corpus import Record
from gradleak.text.metrics import score_text
from gradleak.text.tokenizer import load_tokenizer

TEXT = "Customer Noël Żółć, 東京 office, email noel@example.com"


def _report(tmp_path, tok, truth_ids, recovered_ids) -> str:
    record = Record(TEXT, (("name", 9, 19),))
    scores = score_text(torch.tensor([recovered_ids]), torch.tensor([truth_ids]), tok.decode, pad_id=tok.pad_id,
                        records=[record])
    return write_text_report(tmp_path / "sentences.html", [record], [truth_ids], [recovered_ids], scores, tok,
                             "t").read_text(encoding="utf-8")


@pytest.mark.parametrize("kind", ["byte", "bpe"])
def test_multibyte_characters_are_shown_whole(kind, tmp_path):
    tok = load_tokenizer(kind, 512) if kind == "bpe" else load_tokenizer("byte")
    ids = tok.encode(TEXT)
    # token by token, "ë" does not come out (what the report showed before): the case is a real one
    assert "ë" not in "".join(tok.token(i) for i in ids)
    spans = token_spans(tok, ids)
    assert "".join(text for text, _ in spans) == TEXT
    assert sorted(i for _, positions in spans for i in positions) == list(range(len(ids)))
    page = _report(tmp_path, tok, ids, ids)
    assert "\ufffd" not in page
    assert "Noël Żółć, 東京" in page.replace('<span class="tok">', "").replace("</span>", "")
    assert '<span class="tok">ë</span>' in page and '<span class="tok">東</span>' in page


def test_a_character_is_marked_right_only_when_every_token_behind_it_is():
    tok = load_tokenizer("byte")
    ids = tok.encode(TEXT)
    spans = token_spans(tok, ids)
    positions = next(p for text, p in spans if text == "ë")
    assert len(positions) == 2
    wrong = ids[:]
    wrong[positions[1]] = ids[positions[0]]  # first byte of "ë" right, second wrong
    html = _report_text(tok, ids, wrong)
    assert '<span class="tok">ë</span>' not in html
    assert '<span class="tok">N</span><span class="tok">o</span>' in html


def _report_text(tok, truth_ids, recovered_ids) -> str:
    from gradleak.report.text import _recovered_html

    return _recovered_html(tok, recovered_ids, truth_ids)
