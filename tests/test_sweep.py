"""Sweeps on a real local Ray: a 12-experiment grid runs with a result for every point, a second run of the
same command does no work, and a failing experiment is recorded without stopping the others."""

from __future__ import annotations

import json

import pytest

ray = pytest.importorskip("ray")

from gradleak.cli import main  # noqa: E402
from gradleak.sweep import ResultsTable, SweepConfig, experiment_key, run_sweep  # noqa: E402

SWEEP = """
[sweep]
out = "{out}"
table = "{table}"
cpus_per_task = 1

[base]
dataset = "digits"
num_classes = 100
image_size = 16
attack_kwargs = {{ iterations = 15 }}

[grid]
attack = ["idlg", "dlg"]
pretrain_steps = [0, 3]
seed = [0, 1, 2]
"""


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    torch.set_num_threads(threads)


def test_grid_of_12_runs_on_ray_and_resumes(tmp_path, capsys):
    out = tmp_path / "sweep"
    config = tmp_path / "sweep.toml"
    config.write_text(SWEEP.format(out=out, table="results.csv"))
    assert main(["sweep", str(config), "--quiet"]) == 0
    first = capsys.readouterr().out
    assert "12 experiments, 0 already done, 12 run (0 failed)" in first
    rows = ResultsTable(out / "results.csv").typed_rows()
    assert len(rows) == 12 and len({r["key"] for r in rows}) == 12
    assert all(r["status"] == "ok" and 0 < r["psnr"] < 100 for r in rows), rows
    # iDLG reads the label off the last layer's gradient: exact at batch size 1.
    assert all(r["label_accuracy"] == 1.0 for r in rows if r["attack"] == "idlg")
    assert {(r["attack"], r["pretrain_steps"], r["seed"]) for r in rows} == {
        (a, p, s) for a in ("idlg", "dlg") for p in (0, 3) for s in (0, 1, 2)
    }
    assert all((out / r["run_dir"] / "grid.png").is_file() for r in rows)
    assert (out / "report.html").is_file()
    before = (out / "results.csv").read_bytes()

    assert main(["sweep", str(config), "--quiet", "--no-report"]) == 0
    assert "12 already done, 0 run" in capsys.readouterr().out
    assert (out / "results.csv").read_bytes() == before


def test_failure_is_recorded_and_others_finish_then_resume_skips_done(tmp_path):
    data = {
        "sweep": {"out": str(tmp_path), "table": "results.parquet"},
        "base": {"dataset": "digits", "num_classes": 100, "image_size": 16, "attack": "idlg",
                 "attack_kwargs": {"iterations": 5}},
        # digits has 1,797 images: the second point fails when the worker loads its batch.
        "grid": {"indices": [[7], [5000]], "seed": [0]},
    }
    config = SweepConfig.from_dict(data, "test")
    summary = run_sweep(config)
    assert (summary.total, summary.ran, summary.failed) == (2, 2, 1)
    rows = {json.loads(r["indices"])[0]: r for r in ResultsTable(tmp_path / "results.parquet").read()}
    assert rows[7]["status"] == "ok" and rows[7]["psnr"] is not None
    assert rows[5000]["status"] == "error" and "DataError" in rows[5000]["error"] and "5000" in rows[5000]["error"]
    assert rows[5000]["key"] == experiment_key(config.experiments()[1])
    # A stopped sweep: grow the grid; only the new point runs, the error is kept unless retried.
    data["grid"]["seed"] = [0, 1]
    grown = run_sweep(SweepConfig.from_dict(data, "test"))
    assert (grown.total, grown.skipped, grown.ran) == (4, 2, 2)
    assert len(ResultsTable(tmp_path / "results.parquet").read()) == 4
    retried = run_sweep(SweepConfig.from_dict(data, "test"), retry_errors=True)
    assert (retried.ran, retried.failed) == (2, 2)
