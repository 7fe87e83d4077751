"""Learning curves and comparison tables from MLflow (``glamhpc report`` / ``glamhpc runs``).

A report reads the runs of an experiment, or the children of a sweep's parent run, groups them
(by default by their swept values minus the seed, so seeds of one setting form one group), and
renders:

* a PNG: success rate vs environment frames, one line per group (mean over its distinct seeds)
  with a band (std, seeded 95 % bootstrap interval of the mean, or min-max), and beside it the
  final-performance table;
* a summary table as markdown and CSV: group, n distinct seeds, final value (mean and interval,
  read at the last frame all seeds reached), best of the mean curve, that frame, env steps/s.
* for runs that logged policy-evolution probes (glamhpc.rl.probes), one PNG per group: per probe
  prompt, each action's probability vs frames, mean over the group's seeds.

For a sweep the three files are also logged to the parent run (artifact folder ``report/``), so the
picture lives next to the runs in the MLflow UI.

Modules: ``loading`` (runs and histories from MLflow), ``stats`` (pure: alignment, bands,
bootstrap, one run per seed), ``groups`` (grouping, one summary per group), ``tables``
(markdown / CSV), ``figure`` (the PNG), ``probes`` (the probe figures), ``links`` (MLflow
compare URL), ``listing`` (`glamhpc runs`), ``build`` (the report files).
The curve math and the plotter are ``glamhpc.ui.plots``, shared with the Tracker.
"""

from glamhpc.report.build import ReportResult, build_report, learning_curve_png
from glamhpc.report.groups import (
    GroupSummary,
    default_group_keys,
    distinct_seeds,
    group_runs,
    group_value,
    summarize_groups,
)
from glamhpc.report.links import compare_runs_url
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
    "compare_runs_url",
    "default_group_keys",
    "distinct_seeds",
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
