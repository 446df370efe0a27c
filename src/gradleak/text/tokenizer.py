"""A byte-level BPE tokenizer trained here, with ``tokenizers``, on the bundled records (nothing downloaded).

Training is deterministic for a given corpus and vocabulary size; the result is cached as the library's own
JSON (no pickles) under ``$GRADLEAK_CACHE/tokenizers`` and named ``gradleak-bpe-<vocab>-v<version>-<hash>``, the
hash covering the corpus, so a capture can say which tokenizer its token ids belong to. ``byte`` is the fallback:
one token per UTF-8 byte (vocabulary 256 + padding), no training at all.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass

from gradleak.cache import cache_dir
from gradleak.errors import ConfigError

VERSION = 1
PAD = "<pad>"
EOS = "<eos>"




@dataclass
class Tokenizer:
    """Encode text to ids and back; ``pad_id`` pads batches on the right."""

    name: str
    backend: object | None  # tokenizers.Tokenizer, or None for bytes
    vocab_size: int
    pad_id: int
    eos_id: int

    def encode(self, text: str) -> list[int]:
        if self.backend is None:
            return list(text.encode("utf-8"))
        return list(self.backend.encode(text).ids)  # type: ignore[attr-defined]

    def decode(self, ids: list[int]) -> str:
        ids = [i for i in ids if i not in (self.pad_id, self.eos_id)]
        if self.backend is None:
            return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")
        return self.backend.decode(ids)  # type: ignore[attr-defined]

    def token(self, i: int) -> str:
        """A readable form of one token (for reports)."""
        if self.backend is None:
            return bytes([i]).decode("latin-1") if i < 256 else PAD
        return self.backend.decode([i])  # type: ignore[attr-defined]

    def batch(self, texts: list[str], seq_len: int | None = None) -> "torch.Tensor":  # noqa: F821
        """Ids ``(B, L)``, right-padded with ``pad_id`` (truncated to ``seq_len`` when given)."""
        import torch

        encoded = [self.encode(t) for t in texts]
        length = seq_len or max(len(e) for e in encoded)
        rows = [(e[:length] + [self.pad_id] * length)[:length] for e in encoded]
        return torch.tensor(rows, dtype=torch.long)


def _train(texts: list[str], vocab_size: int) -> object:
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def load_tokenizer(kind: str = "bpe", vocab_size: int = 2048, texts: list[str] | None = None) -> Tokenizer:
    """The ``byte`` tokenizer, or a BPE of ``vocab_size`` trained on ``texts`` (default: the bundled records),
    read from the cache when it was trained before."""
    if kind == "byte":
        return Tokenizer(f"gradleak-byte-v{VERSION}", None, 258, 256, 257)
    if kind != "bpe":
        raise ConfigError(f"tokenizer must be 'bpe' or 'byte', got {kind!r}")
    if not isinstance(vocab_size, int) or not 300 <= vocab_size <= 200_000:
        raise ConfigError(f"BPE vocabulary size must be an integer in [300, 200000], got {vocab_size!r}")
    from tokenizers import Tokenizer as HFTokenizer

    if texts is None:
        from gradleak.text.corpus import private_records

        texts = [r.text for r in private_records(3000, seed=12345)]
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:12]
    name = f"gradleak-bpe-{vocab_size}-v{VERSION}-{digest}"
    path = cache_dir() / "tokenizers" / f"{name}.json"
    if path.is_file():
        backend = HFTokenizer.from_file(str(path))
    else:
        backend = _train(texts, vocab_size)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        backend.save(str(tmp))  # type: ignore[attr-defined]
        os.replace(tmp, path)
    return Tokenizer(name, backend, backend.get_vocab_size(), backend.token_to_id(PAD),  # type: ignore[attr-defined]
                     backend.token_to_id(EOS))  # type: ignore[attr-defined]


#: a BPE tokenizer of gradleak's own, by name: vocabulary, version, hash of its training text
_GRADLEAK_BPE = re.compile(r"gradleak-bpe-(\d{3,6})-v(\d+)-([0-9a-f]{12})")


def tokenizer_named(name: str | None) -> tuple[Tokenizer | None, str | None]:
    """The tokenizer a capture names, rebuilt from its name alone when it is one of gradleak's: the byte tokenizer,
    or a BPE read from the tokenizer cache (the library's own JSON, never code) or trained again on the bundled
    records, kept only when the rebuilt name (it hashes the training text) is the one named. Otherwise
    ``(None, why)`` in one line."""
    if not name:
        return None, "the capture names no tokenizer (record with tokenizer=...)"
    if name == f"gradleak-byte-v{VERSION}":
        return load_tokenizer("byte"), None
    match = _GRADLEAK_BPE.fullmatch(name)
    if match is None or int(match[2]) != VERSION:
        return None, f"the capture names tokenizer {name!r}, not one gradleak can rebuild"
    path = cache_dir() / "tokenizers" / f"{name}.json"
    try:
        if path.is_file():
            from tokenizers import Tokenizer as HFTokenizer

            backend = HFTokenizer.from_file(str(path))
            tok = Tokenizer(name, backend, backend.get_vocab_size(), backend.token_to_id(PAD),
                            backend.token_to_id(EOS))
        else:
            tok = load_tokenizer("bpe", int(match[1]))
    except Exception as exc:  # noqa: BLE001 - a damaged cache file or a bad size: decode without it, say why
        return None, f"tokenizer {name!r} could not be rebuilt ({' '.join(str(exc).split())})"
    if tok.name != name:
        return None, (f"tokenizer {name!r} was trained on other text than the bundled records and is not in the "
                      f"tokenizer cache ({path.parent})")
    return tok, None
