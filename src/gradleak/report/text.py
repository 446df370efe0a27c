"""The text report: each true record beside its reconstruction, secrets and recovered tokens highlighted.

One self-contained HTML file (``sentences.html``): per record, the truth with each secret span marked recovered
(green) or not (red), and the reconstruction with the tokens that match the truth at their position marked; the
batch's ROUGE, exact-sequence share and secrets recovered on top.
"""

from __future__ import annotations

import html
from pathlib import Path

from gradleak.text.corpus import Record
from gradleak.text.metrics import TextScores
from gradleak.text.tokenizer import Tokenizer

_STYLE = """body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;width:100%}
td,th{border-bottom:1px solid #ddd;padding:.4em;vertical-align:top;text-align:left}
.hit{background:#c8f7c5}.miss{background:#f7c5c5}.tok{background:#dbe9ff}.mono{font-family:monospace}"""


def _truth_html(record: Record, recovered: str) -> str:
    out, last = [], 0
    for kind, a, b in sorted(record.secrets, key=lambda s: s[1]):
        out.append(html.escape(record.text[last:a]))
        value = record.text[a:b]
        cls = "hit" if value in recovered else "miss"
        out.append(f'<span class="{cls}" title="{kind}">{html.escape(value)}</span>')
        last = b
    out.append(html.escape(record.text[last:]))
    return "".join(out)


def token_spans(tokenizer: Tokenizer, ids: list[int]) -> list[tuple[str, list[int]]]:
    """The record ``ids`` decoded whole, cut into pieces each paired with the token positions that produce it.

    Decoding token by token breaks a character whose UTF-8 bytes span two tokens (byte-level BPE, the byte
    tokenizer) into replacement characters ("No\ufffd\ufffdl" for "Noël"). Here the prefix ``ids[:k]`` is decoded
    for each ``k``; the text it shares with the whole decode is settled, so a piece ends where that shared
    prefix grows, and a character split across tokens belongs to all of them."""
    full = tokenizer.decode(ids)
    pieces: list[tuple[str, list[int]]] = []
    settled, pending = 0, []
    for k in range(1, len(ids) + 1):
        pending.append(k - 1)
        prefix = tokenizer.decode(ids[:k]) if k < len(ids) else full
        shared = 0
        for a, b in zip(prefix, full):
            if a != b:
                break
            shared += 1
        if shared > settled:
            pieces.append((full[settled:shared], pending))
            settled, pending = shared, []
    if settled < len(full) or pending:
        pieces.append((full[settled:], pending))
    return pieces


def _recovered_html(tokenizer: Tokenizer, recovered: list[int], truth: list[int]) -> str:
    """The reconstruction decoded whole; a piece is marked when every token behind it is right at its position."""
    parts = []
    for text, positions in token_spans(tokenizer, recovered):
        piece = html.escape(text)
        right = bool(positions) and all(i < len(truth) and truth[i] == recovered[i] for i in positions)
        parts.append(f'<span class="tok">{piece}</span>' if right else piece)
    return "".join(parts)


def write_text_report(path: str | Path, records: list[Record], truth_ids: list[list[int]],
                      recovered_ids: list[list[int]], scores: TextScores, tokenizer: Tokenizer, title: str) -> Path:
    """Write ``sentences.html``; ``recovered_ids`` are already matched to ``truth_ids`` (same order)."""
    path = Path(path)
    means = scores.means()
    summary = ", ".join(f"{k} {v:.3f}" for k, v in means.items() if v is not None)
    rows = []
    for i, record in enumerate(records):
        rows.append(f"<tr><td>{i}</td><td>{_truth_html(record, scores.recovered_text[i])}</td>"
                    f"<td class='mono'>{_recovered_html(tokenizer, recovered_ids[i], truth_ids[i])}</td>"
                    f"<td>{scores.rouge1[i]:.2f} / {scores.rouge2[i]:.2f}</td>"
                    f"<td>{'yes' if scores.exact[i] else 'no'}</td>"
                    f"<td>{scores.secrets_found[i]} / {scores.secrets_total[i]}</td></tr>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(summary)}</p>"
            "<p><span class='hit'>secret recovered</span> <span class='miss'>secret not recovered</span> "
            "<span class='tok'>token right at its position</span></p><table><tr><th>#</th><th>truth</th>"
            "<th>reconstruction</th><th>ROUGE-1 / 2</th><th>exact</th><th>secrets</th></tr>"
            + "".join(rows) + "</table></body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
