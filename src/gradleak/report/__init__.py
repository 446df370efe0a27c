"""Reports of one run: a truth-vs-reconstruction PNG grid and ``metrics.json`` (schema in ``metrics_json``)."""

from gradleak.report.files import write_report
from gradleak.report.grid import save_grid

__all__ = ["save_grid", "write_report"]
