"""The HTML report is self-contained and renders, with every image loaded, in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gradleak.experiment import ExperimentConfig
from gradleak.report.html import write_html
from gradleak.sweep import ResultsTable, experiment_key, run_one

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _sweep_table(folder: Path) -> Path:
    """A small results table made the way a sweep makes it (run_one per experiment), without Ray."""
    table = ResultsTable(folder / "results.csv")
    grid = [(b, s, None, {}) for b in (1, 2) for s in (0, 1)] + [(1, s, "gaussian", {"std": 0.1}) for s in (0, 1)]
    for batch_size, seed, defense, defense_kwargs in grid:
        config = ExperimentConfig(dataset="digits", image_size=16, num_classes=100, batch_size=batch_size,
                                  attack="dlg", attack_kwargs={"iterations": 8}, seed=seed, defense=defense,
                                  defense_kwargs=defense_kwargs)
        key = experiment_key(config)
        result = run_one(config.to_dict())
        assert result["status"] == "ok", result["error"]
        for name, data in result.pop("files").items():
            (folder / "runs" / key).mkdir(parents=True, exist_ok=True)
            (folder / "runs" / key / name).write_bytes(data)
        table.append({"key": key, **result, **config.to_dict(), "run_dir": f"runs/{key}"})
    return table.path


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--virtual-time-budget=10000"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


def test_sweep_report_is_self_contained(tmp_path):
    html = write_html(_sweep_table(tmp_path)).read_text()
    srcs = re.findall(r'<img src="([^"]+)"', html)
    assert len(srcs) >= 8  # 6 grids, the batch-size and the defense-strength plots
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    import torch

    for needle in ("Truth vs reconstruction", "alt=\"leakage vs batch size\"", "alt=\"leakage vs defense strength\"",
                   "Metrics", "Configuration", "Versions",
                   torch.__version__):
        assert needle in html
    assert "http://" not in html and "https://" not in html
    # every mean beside the best guess, and the share leaked, in the table and the summary
    head = re.search(r"<h2>Metrics</h2><table><thead><tr>(.*?)</tr>", html).group(1)
    columns = re.findall(r"<th>([^<]+)</th>", head)
    for mean, beside in (("psnr", "best_baseline_psnr"), ("ssim", "best_baseline_ssim")):
        assert columns.index(beside) == columns.index(mean) + 1
    assert "leaked" in columns and "median best guess PSNR (dB)" in html and "samples leaked" in html
    rows = ResultsTable(tmp_path / "results.csv").typed_rows()
    assert all(r["best_baseline_psnr"] > 10 and r["leaked"] == 0.0 for r in rows)  # 8 DLG steps leak nothing


def test_run_report_shows_the_best_guess_and_the_verdict(tmp_path):
    from gradleak.experiment import run_experiment

    run_experiment(ExperimentConfig(dataset="digits", image_size=16, num_classes=100, attack="dlg",
                                    attack_kwargs={"iterations": 4}), out=tmp_path / "run")
    html = write_html(tmp_path / "run").read_text()
    for needle in ("best guess PSNR (dB)", "samples leaked", "Verdict: no leak", "<th>best_baseline_psnr</th>",
                   "<th>leaked</th>"):
        assert needle in html, needle


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make setup installs it)")
def test_report_renders_in_headless_chromium_with_all_images(tmp_path):
    report = write_html(_sweep_table(tmp_path), config="[grid]\nbatch_size = [1, 2]\nseed = [0, 1]\n")
    dom = _chromium(["--dump-dom", report.as_uri()], tmp_path / "profile")
    assert dom.returncode == 0, dom.stderr[-2000:]
    total = re.search(r'data-images-total="(\d+)"', dom.stdout)
    loaded = re.search(r'data-images-loaded="(\d+)"', dom.stdout)
    assert total and loaded, "the page's load script did not run"
    assert int(total.group(1)) >= 8 and loaded.group(1) == total.group(1)
    shot = tmp_path / "shot.png"
    _chromium([f"--screenshot={shot}", "--window-size=1200,1600", report.as_uri()], tmp_path / "profile2")
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1200, 1600)
        assert len(set(im.convert("L").resize((120, 160)).getdata())) > 20  # not a blank page
