"""Learning curves and comparison tables from MLflow (``glamhpc report`` / ``glamhpc runs``).

A report reads the runs of an experiment, or the children of a sweep's parent run, groups them
(by default by their swept values minus the seed, so seeds of one setting form one group), and
renders:

* a PNG: success rate vs environment frames, one line per group (mean over the group's runs) with
  a band for the spread (std or min-max);
* a summary table as markdown and CSV: group, n seeds, final success mean ± std, best of the mean
  curve, frames, env steps/s.

For a sweep the three files are also logged to the parent run (artifact folder ``report/``), so the
picture lives next to the runs in the MLflow UI.

Modules: ``loading`` (runs and histories from MLflow), ``groups`` (grouping, one summary per
group), ``tables`` (markdown / CSV), ``listing`` (`glamhpc runs`), ``build`` (the report files).
The curve math and the plotter are ``glamhpc.ui.plots``, shared with the Tracker.
"""

from glamhpc.report.build import ReportResult, build_report, learning_curve_png
from glamhpc.report.groups import (
    GroupSummary,
    default_group_keys,
    group_runs,
    group_value,
    summarize_groups,
)
from glamhpc.report.listing import RunRow, list_runs
from glamhpc.report.loading import RunData, load_histories, resolve_target
from glamhpc.report.tables import groups_csv, groups_markdown
from glamhpc.ui.plots import DEFAULT_METRIC

__all__ = [
    "DEFAULT_METRIC",
    "GroupSummary",
    "ReportResult",
    "RunData",
    "RunRow",
    "build_report",
    "default_group_keys",
    "group_runs",
    "group_value",
    "groups_csv",
    "groups_markdown",
    "learning_curve_png",
    "list_runs",
    "load_histories",
    "resolve_target",
    "summarize_groups",
]
