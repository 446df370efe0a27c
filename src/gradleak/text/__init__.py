"""Text: the private records a fine-tuning set holds, a tokenizer trained here, language models from configs,
and the scores of a text reconstruction (ROUGE, exact sequences, secrets recovered)."""

from __future__ import annotations

from gradleak.text.corpus import Record, load_text, private_records
from gradleak.text.metrics import TextScores, score_text
from gradleak.text.models import TEXT_MODELS, text_model_spec
from gradleak.text.tokenizer import Tokenizer, load_tokenizer

__all__ = ["TEXT_MODELS", "Record", "TextScores", "Tokenizer", "load_text", "load_tokenizer", "private_records",
           "score_text", "text_model_spec"]
