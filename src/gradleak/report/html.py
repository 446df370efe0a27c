"""Self-contained HTML reports: every image is embedded as a ``data:`` URI, so one file can be mailed or
attached to a ticket. Three sources: a sweep's results table, one run's folder, or a federated audit.

``write_html(source, out)`` picks by what ``source`` is: a ``.csv``/``.parquet`` table, a folder holding
``metrics.json`` (one run, as ``gradleak demo``/``attack`` write it) or ``audit.json`` (``gradleak fl-audit``).
A small script marks the page with ``data-images-loaded``/``data-images-total`` once every image has loaded,
which the rendering test reads from headless Chromium.
"""

from __future__ import annotations

import base64
import html
import json
import platform
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from gradleak.errors import ConfigError
from gradleak.outputs import check_not_input
from gradleak.report import plots
from gradleak.sweep import ResultsTable

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;color:#1d2430;
padding:0 16px;background:#fbfbfd}
h1{font-size:1.6em;margin-bottom:4px} h2{font-size:1.2em;margin-top:32px;border-bottom:1px solid #dde;padding-bottom:4px}
.sub{color:#667;margin-top:0} .cards{display:flex;gap:12px;flex-wrap:wrap}
.card{background:#fff;border:1px solid #e2e4ea;border-radius:8px;padding:10px 16px;min-width:120px}
.card b{display:block;font-size:1.4em} .card span{color:#667;font-size:.85em}
table{border-collapse:collapse;font-size:.85em;background:#fff;width:100%}
th,td{border:1px solid #e2e4ea;padding:4px 8px;text-align:left;vertical-align:top} th{background:#f1f2f6}
td.num{text-align:right;font-variant-numeric:tabular-nums} tr.error td{background:#fff1f1}
tr.leak td{background:#fff6e5}
.plots{display:flex;flex-wrap:wrap;gap:16px} .plots img{border:1px solid #e2e4ea;background:#fff;max-width:100%}
.grids{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:14px}
figure{margin:0;background:#fff;border:1px solid #e2e4ea;border-radius:6px;padding:6px}
figure img{width:100%;image-rendering:pixelated} figcaption{font-size:.78em;color:#445}
pre{background:#f4f5f8;border:1px solid #e2e4ea;padding:10px;overflow:auto;font-size:.8em}
.note{color:#667;font-size:.9em}
"""

LOADED_SCRIPT = """
<script>
(function(){
  function mark(){
    var imgs=[].slice.call(document.images);
    var ok=imgs.filter(function(i){return i.complete && i.naturalWidth>0;}).length;
    document.documentElement.setAttribute('data-images-total', String(imgs.length));
    document.documentElement.setAttribute('data-images-loaded', String(ok));
  }
  window.addEventListener('load', mark);
})();
</script>
"""


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def img(png: bytes, alt: str, width: int | None = None) -> str:
    w = f' width="{width}"' if width else ""
    return f'<img src="{data_uri(png)}" alt="{html.escape(alt)}"{w}>'


def versions() -> dict[str, str]:
    """Versions of the packages that produced a report."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for dist in ("gradleak", "torch", "numpy", "flwr", "ray", "opacus", "torchmetrics"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], numeric: Sequence[str] = (),
          row_class: Any = None) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for r in rows:
        cls = row_class(r) if row_class else ""
        cells = "".join(
            f'<td class="{"num" if c in numeric else ""}">{html.escape(_fmt(r.get(c)))}</td>'
            for c in columns
        )
        body.append(f'<tr class="{cls}">{cells}</tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def cards(items: Sequence[tuple[str, str]]) -> str:
    return '<div class="cards">' + "".join(
        f'<div class="card"><b>{html.escape(v)}</b><span>{html.escape(k)}</span></div>' for k, v in items
    ) + "</div>"


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str]], config: Any = None) -> str:
    """A whole HTML document: title, sections ``(heading, html)``, then the config and versions."""
    parts = [f"<h1>{html.escape(title)}</h1><p class='sub'>{html.escape(subtitle)}</p>"]
    for heading, body in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>{body}")
    if config is not None:
        text = config if isinstance(config, str) else json.dumps(config, indent=2, sort_keys=True, default=str)
        parts.append(f"<h2>Configuration</h2><pre>{html.escape(text)}</pre>")
    parts.append(f"<h2>Versions</h2><pre>{html.escape(json.dumps(versions(), indent=2))}</pre>")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body>{''.join(parts)}{LOADED_SCRIPT}</body></html>"
    )


def _plots(figures: Sequence[tuple[str, bytes | None]]) -> str:
    shown = [img(png, name) for name, png in figures if png is not None]
    missing = [name for name, png in figures if png is None]
    note = f"<p class='note'>Not plotted (the results do not vary it): {', '.join(missing)}.</p>" if missing else ""
    return f"<div class='plots'>{''.join(shown)}</div>{note}"


# -- sweeps -----------------------------------------------------------------------------------------------
def varying(rows: Sequence[dict[str, Any]], skip: Sequence[str]) -> list[str]:
    """Columns whose values differ between rows (the sweep's axes, as the results show them)."""
    cols: list[str] = []
    for r in rows:
        cols.extend(c for c in r if c not in cols)
    out = []
    for c in cols:
        if c in skip:
            continue
        values = {json.dumps(r.get(c), sort_keys=True, default=str) for r in rows}
        if len(values) > 1:
            out.append(c)
    return out


#: each mean beside the best guess's on the same samples (``gradleak.baselines``) and the share of samples leaked
METRICS = ("psnr", "best_baseline_psnr", "ssim", "best_baseline_ssim", "leaked", "mse", "label_accuracy",
           "wall_time_s")


def _is_bundle(rows: Sequence[dict[str, Any]], column: str) -> bool:
    """A sweep axis that sets several fields at once (its table's entries are columns of the row too)."""
    return all(isinstance(r.get(column), dict) and all(r.get(k) == v for k, v in r[column].items()) for r in rows)


def render_sweep(rows: Sequence[dict[str, Any]], root: Path | None = None, config: Any = None,
                 title: str = "gradleak sweep report", max_grids: int = 60) -> str:
    """A sweep's report from its typed rows; ``root`` is the folder that ``run_dir`` entries are relative to."""
    ok = [r for r in rows if r.get("status") == "ok"]
    failed = [r for r in rows if r.get("status") != "ok"]
    skip = ("key", "status", "error", "run_dir", "worker", "finished_at", *METRICS, "iterations")
    axes = [a for a in varying(rows, skip) if not _is_bundle(rows, a)]
    def numbers(key: str) -> list[float]:
        return [r[key] for r in ok if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]

    psnrs, guesses, shares = numbers("psnr"), numbers("best_baseline_psnr"), numbers("leaked")
    summary = cards([
        ("experiments", str(len(rows))), ("ok", str(len(ok))), ("failed", str(len(failed))),
        ("best PSNR (dB)", f"{max(psnrs):.1f}" if psnrs else "n/a"),
        ("median PSNR (dB)", f"{sorted(psnrs)[len(psnrs) // 2]:.1f}" if psnrs else "n/a"),
        ("median best guess PSNR (dB)", f"{sorted(guesses)[len(guesses) // 2]:.1f}" if guesses else "n/a"),
        ("samples leaked (mean share over runs)", f"{sum(shares) / len(shares):.0%}" if shares else "n/a"),
    ])
    figures = [
        ("leakage vs defense strength", plots.leakage_vs_defense_strength(rows)),
        ("leakage vs batch size", plots.leakage_vs_batch_size(rows)),
        ("leakage vs training stage", plots.leakage_vs_training_stage(rows)),
    ]
    metrics_table = table(
        sorted(rows, key=lambda r: [json.dumps(r.get(a), sort_keys=True, default=str) for a in axes]),
        ["key", *axes, "status", *METRICS, "error"], numeric=METRICS,
        row_class=lambda r: "error" if r.get("status") != "ok" else "",
    )
    grids = []
    for r in ok[:max_grids]:
        path = (root / str(r.get("run_dir") or "") / "grid.png") if root is not None and r.get("run_dir") else None
        if path is None or not path.is_file():
            continue
        caption = ", ".join(f"{a}={_fmt(r.get(a))}" for a in axes) + f" — {_fmt(r.get('psnr'))} dB"
        figure = f"{img(path.read_bytes(), caption)}<figcaption>{html.escape(caption)}</figcaption>"
        grids.append(f"<figure>{figure}</figure>")
    more = f"<p class='note'>First {max_grids} of {len(ok)} runs shown.</p>" if len(ok) > max_grids else ""
    sections = [
        ("Summary", summary + "<p class='note'><code>best_baseline_psnr</code>/<code>_ssim</code>: the mean, "
         "over a run's samples, of the best guess an attacker makes without the update (mid-gray, the public mean "
         "image, the best image of a disjoint public set); <code>leaked</code>: the share of samples whose "
         "reconstruction beats that guess by the margins (3 dB PSNR and 0.1 SSIM by default).</p>"),
        ("Leakage plots", _plots(figures) + "<p class='note'>Mean over seeds and any axis a plot does not show; "
         "bars: ±1 standard deviation. "
         "Defense strength is the defense's <code>strength</code> setting or its only numeric setting; "
         "0 is no defense.</p>"),
        ("Truth vs reconstruction", f"<div class='grids'>{''.join(grids)}</div>{more}" if grids
         else "<p class='note'>No run folders with grids found.</p>"),
        ("Metrics", metrics_table),
    ]
    if failed:
        sections.append(("Failures", table(failed, ["key", *axes, "error"])))
    if config is None:  # the settings every run shares; the varying ones are in the metrics table
        shared = [c for c in (rows[0] if rows else {}) if c not in axes and c not in skip]
        config = {c: rows[0].get(c) for c in shared}
    return page(title, f"{len(rows)} experiments, varying {', '.join(axes) or 'nothing'}", sections, config)


# -- one run ----------------------------------------------------------------------------------------------
def render_run(folder: Path, title: str = "gradleak run report") -> str:
    """A single run's report from its folder (``metrics.json``, ``grid.png``, ``trace.png``)."""
    metrics = json.loads((folder / "metrics.json").read_text())
    mean = metrics.get("mean", {})
    leaked = mean.get("leaked")
    summary = cards([
        ("PSNR (dB)", _fmt(mean.get("psnr"))), ("best guess PSNR (dB)", _fmt(mean.get("best_baseline_psnr"))),
        ("SSIM", _fmt(mean.get("ssim"), 3)), ("best guess SSIM", _fmt(mean.get("best_baseline_ssim"), 3)),
        ("samples leaked", "n/a" if leaked is None else f"{leaked:.0%}"),
        ("label accuracy", _fmt(mean.get("label_accuracy"))), ("iterations", _fmt(metrics.get("iterations"))),
        ("time (s)", _fmt(metrics.get("wall_time_s"), 1)),
    ])
    if metrics.get("verdict"):
        summary += f"<p class='note'>Verdict: {html.escape(str(metrics['verdict']))}</p>"
    images = [f"<figure>{img((folder / n).read_bytes(), n)}<figcaption>{n}</figcaption></figure>"
              for n in ("grid.png", "trace.png") if (folder / n).is_file()]
    per = metrics.get("per_sample", {})
    n = len(per.get("psnr") or [])
    baselines = metrics.get("baselines") or {}
    columns = {**per, "best_baseline_psnr": baselines.get("best_psnr"),
               "best_baseline_ssim": baselines.get("best_ssim")}
    shown = ("psnr", "best_baseline_psnr", "ssim", "best_baseline_ssim", "leaked", "mse", "true_label",
             "recovered_label")
    rows = [{"sample": i, **{k: (columns.get(k) or [None] * n)[i] for k in shown}} for i in range(n)]
    sections = [
        ("Summary", summary),
        ("Truth vs reconstruction", f"<div class='plots'>{''.join(images)}</div>"),
        ("Per-sample metrics", table(rows, ["sample", *shown],
                                     numeric=("psnr", "best_baseline_psnr", "ssim", "best_baseline_ssim", "mse"))),
    ]
    attack = metrics.get("attack", {}).get("name", "?")
    config = {k: metrics.get(k) for k in ("attack", "observation", "config", "seed", "device") if k in metrics}
    return page(title, f"{attack} on {metrics.get('observation', {}).get('model', '?')}", sections, config)


# -- federated audits -------------------------------------------------------------------------------------
#: every mean beside the best guess's mean on the same samples, and the share of samples leaked
AUDIT_NUMERIC = ("psnr_best", "psnr_mean", "best_baseline_psnr", "ssim_best", "ssim_mean", "best_baseline_ssim",
                 "leaked", "label_accuracy", "wall_time_s")


def render_audit_folder(folder: Path, title: str = "gradleak federated leakage audit") -> str:
    data = json.loads((folder / "audit.json").read_text())
    rows = data["rows"]
    grids = {}
    for r in rows:
        path = folder / "grids" / f"round{r['round']}_{r['source']}.png"
        if path.is_file():
            grids[(r["round"], r["source"])] = path.read_bytes()
    config = {k: v for k, v in data.items() if k != "rows"}
    return render_audit_rows(rows, grids, config, title)


def render_audit_rows(rows: Sequence[dict[str, Any]], grids: dict[tuple[int, str], bytes], config: Any,
                      title: str = "gradleak federated leakage audit") -> str:
    scored = [r for r in rows if isinstance(r.get("psnr_best"), (int, float))]
    judged = [r for r in scored if isinstance(r.get("leaked"), (int, float)) and not isinstance(r["leaked"], bool)]
    samples = sum(int(r.get("samples") or 0) for r in judged)
    leaked_samples = sum(float(r["leaked"]) * int(r.get("samples") or 0) for r in judged)
    aggregate = any(r.get("aggregate") for r in rows)
    settings = (config or {}).get("settings", {}) if isinstance(config, dict) else {}
    threshold = settings.get("leak_threshold_db", 25.0)

    def mean_of(key: str) -> str:
        values = [r[key] for r in judged if isinstance(r.get(key), (int, float))]
        return f"{sum(values) / len(values):.1f}" if values else "n/a"

    summary = cards([
        ("updates attacked", str(len(rows))), ("rounds", str(len({r['round'] for r in rows}))),
        ("server saw", "aggregates only (secure aggregation)" if aggregate else "every client's update"),
        ("mean PSNR (dB)", mean_of("psnr_mean")),
        ("best guess without the update, mean PSNR (dB)", mean_of("best_baseline_psnr")),
        ("private samples leaked (beat the best guess)",
         f"{round(leaked_samples)}/{samples} ({leaked_samples / samples:.0%})" if samples else "n/a"),
        ("best PSNR (dB)", f"{max(r['psnr_best'] for r in scored):.1f}" if scored else "n/a"),
        (f"updates with a sample >= {threshold:g} dB", str(sum(1 for r in rows if r.get("above_threshold")))),
    ])
    margins = settings.get("margins") or {}
    guesses = ", ".join(settings.get("guesses") or ["gray", "mean image"])
    note = (f"<p class='note'>Best guess: the best, per private sample, of what the attacker produces without the "
            f"update ({html.escape(guesses)}). A sample is leaked when its reconstruction beats it by "
            f"{_fmt(margins.get('psnr_db', 3.0), 1)} dB PSNR and {_fmt(margins.get('ssim', 0.1), 2)} SSIM; "
            "<code>leaked</code> is the share of a row's private samples.</p>")
    figs = []
    for r in rows:
        png = grids.get((r["round"], r["source"]))
        if png is None:
            continue
        cap = f"round {r['round']}, {r['source']}: best {_fmt(r.get('psnr_best'))} dB"
        figs.append(f"<figure>{img(png, cap)}<figcaption>{html.escape(cap)}</figcaption></figure>")
    sections = [
        ("Summary", summary + note),
        ("Leakage per round", _plots([("leakage per round", plots.leakage_per_round(rows))])),
        ("Truth vs reconstruction", f"<div class='grids'>{''.join(figs)}</div>"),
        ("Per-round, per-client leakage", table(
            rows, ["round", "source", "aggregate", "num_clients", "batch_size", "samples", "attack", *AUDIT_NUMERIC,
                   *(["dp_epsilon"] if any(r.get("dp_epsilon") is not None for r in rows) else []), "error"],
            numeric=(*AUDIT_NUMERIC, "dp_epsilon"),
            row_class=lambda r: "error" if r.get("error") else ("leak" if r.get("leaked") else ""))),
    ]
    return page(title, "What a curious server reconstructs from the updates it recorded", sections, config)


# -- entry point ------------------------------------------------------------------------------------------
def write_html(source: str | Path, out: str | Path | None = None, config: Any = None, title: str | None = None) -> Path:
    """Render the report for ``source`` (results table, run folder or audit folder) to ``out``."""
    source = Path(source)
    if source.is_file() and source.suffix.lower() in (".csv", ".parquet"):
        rows = ResultsTable(source).typed_rows()
        if not rows:
            raise ConfigError(f"{source}: the results table is empty")
        saved = source.with_name("sweep_config.json")
        if config is None and saved.is_file():
            config = json.loads(saved.read_text())
        text = render_sweep(rows, source.parent, config, title or "gradleak sweep report")
        default = source.with_name("report.html")
    elif source.is_dir() and (source / "audit.json").is_file():
        text = render_audit_folder(source, title or "gradleak federated leakage audit")
        default = source / "report.html"
    elif source.is_dir() and (source / "metrics.json").is_file():
        text = render_run(source, title or "gradleak run report")
        default = source / "report.html"
    else:
        raise ConfigError(
            f"{source}: expected a results table (.csv/.parquet) or a folder with metrics.json or audit.json"
        )
    path = Path(out) if out is not None else default
    if path.is_dir():
        raise ConfigError(f"--out {path}: an existing folder; name the HTML file to write")
    inputs = [source] if source.is_file() else [source / n for n in ("metrics.json", "audit.json", "audit.csv")]
    check_not_input(path, [*inputs, source.with_name("sweep_config.json")] if source.is_file() else inputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
