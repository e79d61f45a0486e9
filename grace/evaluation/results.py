"""Results in the paper's layout: category averages, an overall average, and the paper's rows.

Averages follow mteb's leaderboard: ``Mean (Task)`` is the mean over all tasks of their main
scores, ``Mean (TaskType)`` the mean of the per-category means. The paper's printed Avg is
neither (see ``shared/GRACE.md``), so both are shown and the paper's Avg is kept as printed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from grace.decision import HIGHER, LOWER, NO_DIFFERENCE, PHRASES, TOO_NOISY, VERDICTS, Difference

# mteb task type -> the paper's column name, in the paper's order.
CATEGORIES = {
    "Retrieval": "Retr",
    "Reranking": "Rerank",
    "Clustering": "Clust",
    "PairClassification": "PairCls",
    "Classification": "Cls",
    "STS": "STS",
    "Summarization": "Summ",
}
MEAN_TASK, MEAN_TYPE = "Mean (Task)", "Mean (TaskType)"

# The paper's Table (MTEB, 56 English tasks), Qwen2.5-1.5B-Instruct rows with categories.
PAPER_ROWS = {
    "paper: Qwen2.5-1.5B base": [22.15, 29.32, 25.44, 36.18, 35.77, 44.11, 26.32, 30.33],
    "paper: Qwen2.5-1.5B base + rationale": [math.nan] * 7 + [32.92],
    "paper: Qwen2.5-1.5B +CL": [38.95, 43.88, 36.21, 52.02, 53.87, 56.39, 28.43, 43.21],
    "paper: Qwen2.5-1.5B GRACE sup.": [40.44, 46.95, 39.55, 54.84, 55.36, 59.42, 30.41, 45.48],
    "paper: Qwen2.5-1.5B SimCSE": [math.nan] * 7 + [39.65],
    "paper: Qwen2.5-1.5B GRACE unsup.": [34.57, 41.86, 35.49, 51.12, 50.78, 56.44, 29.07, 41.45],
}
PAPER_AVG = "Avg (paper, as printed)"


def summarize(runs: dict[str, list[dict]]) -> pd.DataFrame:
    """One row per run: category means and both overall means, scores x 100.

    ``runs`` maps a row label to task records ``{"task", "type", "score"}`` (score in 0..1).
    Categories a run has no task in are left empty (NaN) and do not count.
    """
    rows = {}
    for label, records in runs.items():
        by_type: dict[str, list[float]] = {}
        for record in records:
            by_type.setdefault(record["type"], []).append(100 * record["score"])
        row = {
            column: sum(by_type[t]) / len(by_type[t]) if t in by_type else math.nan
            for t, column in CATEGORIES.items()
        }
        scores = [s for values in by_type.values() for s in values]
        row[MEAN_TASK] = sum(scores) / len(scores) if scores else math.nan
        means = [row[CATEGORIES[t]] for t in by_type if t in CATEGORIES]
        row[MEAN_TYPE] = sum(means) / len(means) if means else math.nan
        rows[label] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def paper_table() -> pd.DataFrame:
    """The paper's Qwen2.5-1.5B-Instruct rows, labelled as the paper's."""
    columns = [*CATEGORIES.values(), PAPER_AVG]
    return pd.DataFrame.from_dict(PAPER_ROWS, orient="index", columns=columns)


def with_paper(ours: pd.DataFrame) -> pd.DataFrame:
    """Our rows above the paper's (different model, data and scale: compare shapes, not values)."""
    return pd.concat([ours, paper_table()])


def to_markdown(table: pd.DataFrame, digits: int = 2) -> str:
    """A GitHub-flavoured markdown table (empty cells for NaN; strings are kept as they are).

    A column empty in every row (a category no task of the suite has) is left out.
    """
    table = table.loc[:, table.notna().any()]
    header = ["", *table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, row in table.iterrows():
        cells = ["" if pd.isna(v) else v if isinstance(v, str) else f"{v:.{digits}f}" for v in row]
        lines.append("| " + " | ".join([str(label), *cells]) + " |")
    return "\n".join(lines)


def bar_chart(
    table: pd.DataFrame,
    path: str | Path | None = None,
    title: str = "",
    errors: pd.DataFrame | None = None,
):
    """Grouped bars: one group per category (plus the overall means), one bar per row.

    ``errors`` (same labels and columns, e.g. the std over sampled rationales) draws an error
    bar on each bar it has a value for; rows or cells it lacks get none."""
    import matplotlib.pyplot as plt

    columns = [c for c in table.columns if table[c].notna().any()]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(columns)), 4))
    width = 0.8 / max(1, len(table))
    for i, (label, row) in enumerate(table.iterrows()):
        positions = [j + i * width for j in range(len(columns))]
        spread = None
        if errors is not None and label in errors.index:
            spread = [errors.loc[label].get(c, 0.0) for c in columns]
        ax.bar(
            positions, [row[c] for c in columns], width, yerr=spread, capsize=2, label=str(label)
        )
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(columns))])
    ax.set_xticklabels(columns, rotation=20)
    ax.set_ylabel("score x 100")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=120)
    return fig


def table_row(label: str, draws: list[dict]) -> dict:
    """One row of ``table.json`` from the reports of a model (one report, or one per draw).

    Scores x 100. With several draws, ``score`` is their mean, ``std`` their standard
    deviation (the rationale-sampling noise) and ``ci95`` the mean of their bootstrap
    intervals (the noise of the queries); with one report ``std`` is null.
    """

    def spread(values: list[float]) -> tuple[float, float | None]:
        mean = float(np.mean(values))
        return mean, (float(np.std(values, ddof=1)) if len(values) > 1 else None)

    tasks = {}
    for record in draws[0]["tasks"]:
        name = record["task"]
        score, std = spread([100 * _score(report, name) for report in draws])
        intervals = [report.get("intervals", {}).get(name) for report in draws]
        ci95 = None
        if all(intervals):
            ci95 = [100 * float(np.mean([i["ci95"][k] for i in intervals])) for k in (0, 1)]
        tasks[name] = {"score": score, "std": std, "ci95": ci95}
    mean, std = spread([summarize({label: r["tasks"]}).iloc[0][MEAN_TASK] for r in draws])
    return {"label": label, "mean_task": {"score": mean, "std": std}, "tasks": tasks}


def _score(report: dict, task: str) -> float:
    return next(r["score"] for r in report["tasks"] if r["task"] == task)


# Differences and their noise: what a table's numbers can and cannot tell apart.


@dataclass(frozen=True)
class Estimate:
    """A score x 100 and the half-width of its 95 % noise band (queries and sampling)."""

    value: float
    noise: float

    def __str__(self) -> str:
        return f"{self.value:.2f} ± {self.noise:.2f}"


def column_tasks(records: list[dict], column: str = MEAN_TASK) -> list[str]:
    """The task names a summary column averages: all tasks for ``Mean (Task)``, the tasks of
    one category for a category column (``Retr``, ``STS``, ...)."""
    if column == MEAN_TASK:
        return [r["task"] for r in records]
    types = [t for t, name in CATEGORIES.items() if name == column]
    if not types:
        raise ValueError(f"No noise estimate for column {column!r}; use {MEAN_TASK} or a category")
    return [r["task"] for r in records if r["type"] == types[0]]


def query_noise(report: dict, column: str = MEAN_TASK) -> float:
    """Half-width x 100 of the 95 % bootstrap band of a column's mean over tasks, from the
    report's per-task ``intervals`` (tasks taken as independent: the half-widths add in
    quadrature, divided by the number of tasks). Tasks without an interval add nothing."""
    names = column_tasks(report["tasks"], column)
    intervals = report.get("intervals") or {}
    halves = [
        100 * (intervals[n]["ci95"][1] - intervals[n]["ci95"][0]) / 2
        for n in names
        if n in intervals
    ]
    return math.sqrt(sum(h * h for h in halves)) / len(names) if names else 0.0


def estimate(reports: list[dict], column: str = MEAN_TASK, draw_std: float = 0.0) -> Estimate:
    """The value of one table row in ``column`` and its 95 % noise half-width.

    ``reports``: one report (a direct row, or one sampled draw) or the single-draw reports of
    a rationale row, whose mean is the row's value. The noise adds in quadrature the queries'
    bootstrap band (``query_noise``, averaged over the reports) and the sampling noise: with
    several draws a t-interval of their mean, with one draw 1.96 ``draw_std`` (the spread of
    single draws measured elsewhere; 0 for a direct row).
    """
    values = [summarize({"row": r["tasks"]}).iloc[0][column] for r in reports]
    queries = float(np.mean([query_noise(r, column) for r in reports]))
    if len(values) > 1:
        from scipy.stats import t

        sampling = t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values))
    else:
        sampling = 1.96 * draw_std
    return Estimate(float(np.mean(values)), float(math.hypot(queries, sampling)))


def describe_change(label: str, change: Difference, unit: str = "points") -> str:
    """``"<label>: +1.20 ± 0.90 points, a gain beyond the noise."``, in ``PHRASES``."""
    return f"{label}: {change} {unit}, {PHRASES[change.verdict]}."


def difference(after: Estimate, before: Estimate) -> Difference:
    """``after - before`` with the two noise bands added in quadrature. Both rows see the same
    queries, so this overstates the noise of the queries: a change inside it may hide a small
    real one, but a difference called real is one."""
    return Difference(after.value - before.value, math.hypot(after.noise, before.noise))


def changes_against(
    reports: Mapping[str, dict],
    reference: str,
    draw_std: Mapping[str, float] | float = 0.0,
    column: str = MEAN_TASK,
) -> pd.DataFrame:
    """Each report's score in ``column`` and its change from the ``reference`` report, with
    the change's 95 % noise and verdict (``Difference``), one row per report but the reference.

    Each report is one measurement; ``draw_std`` is the spread of single draws for a report
    of one sampled rationale (per label, or one value for all; 0 for direct ones).
    """

    def noise_of(label: str) -> float:
        return draw_std.get(label, 0.0) if isinstance(draw_std, Mapping) else draw_std

    base = estimate([reports[reference]], column, noise_of(reference))
    rows = {}
    for label, report in reports.items():
        if label == reference:
            continue
        score = estimate([report], column, noise_of(label))
        change = difference(score, base)
        rows[label] = {column: score.value, "change": str(change), "verdict": change.verdict}
    return pd.DataFrame.from_dict(rows, orient="index")


def count_verdicts(table: pd.DataFrame, against: str) -> str:
    """One sentence counting the ``verdict`` column of a ``changes_against`` table."""
    verdicts = list(table["verdict"])
    counts = {v: verdicts.count(v) for v in VERDICTS}
    return (
        f"Against {against}: a gain beyond the noise at {counts[HIGHER]} of {len(verdicts)} "
        f"points, a loss at {counts[LOWER]}, no measured difference at {counts[NO_DIFFERENCE]}"
        f", too noisy to tell at {counts[TOO_NOISY]}."
    )


# (our row, our reference row, the paper's row, the paper's reference row): the paper's
# headline comparisons of its Qwen2.5-1.5B rows, each with the rows of ours that play the
# same parts.
PAPER_COMPARISONS = [
    ("base + rationale", "base, direct", "base + rationale", "base"),
    ("GRACE supervised", "base, direct", "GRACE sup.", "base"),
    ("GRACE supervised", "+CL", "GRACE sup.", "+CL"),
    ("GRACE unsupervised", "base, direct", "GRACE unsup.", "base"),
    ("GRACE unsupervised", "SimCSE", "GRACE unsup.", "SimCSE"),
]
PAPER_ROW = "paper: Qwen2.5-1.5B {}"  # a name of the comparisons above -> its PAPER_ROWS key


def paper_comparisons(
    rows: dict[str, list[dict]], comparisons: list[tuple[str, str, str, str]] = PAPER_COMPARISONS
) -> pd.DataFrame:
    """Our change in ``Mean (Task)`` beside the paper's change in its printed Avg, one row per
    comparison whose two rows of ours are in ``rows`` (label -> its reports, see ``estimate``).

    Columns: ``ours`` (change ± 95 % noise), ``ours: verdict`` (``Difference.verdict``) and
    ``paper (Avg as printed)``, the paper's change between its two rows.
    """
    table = {}
    for after, before, paper_after, paper_before in comparisons:
        if after not in rows or before not in rows:
            continue
        change = difference(estimate(rows[after]), estimate(rows[before]))
        paper = (
            PAPER_ROWS[PAPER_ROW.format(paper_after)][-1]
            - PAPER_ROWS[PAPER_ROW.format(paper_before)][-1]
        )
        table[f"{after} vs {before}"] = {
            "ours": str(change),
            "ours: verdict": change.verdict,
            "paper (Avg as printed)": f"{paper:+.2f}",
        }
    return pd.DataFrame.from_dict(table, orient="index")


def describe_comparisons(table: pd.DataFrame) -> str:
    """One sentence counting the verdicts of a ``paper_comparisons`` table against the signs
    of the paper's changes."""
    verdicts = list(table["ours: verdict"])
    counts = {v: verdicts.count(v) for v in VERDICTS}
    gains = sum(float(change) > 0 for change in table["paper (Avg as printed)"])
    return (
        f"Of these {len(verdicts)} comparisons the paper reports {gains} as gains; this run "
        f"measures a gain in {counts[HIGHER]}, a loss in {counts[LOWER]}, no measured "
        f"difference in {counts[NO_DIFFERENCE]} and cannot tell in {counts[TOO_NOISY]}."
    )


def chance_margins(rows: dict[str, list[dict]], chance: list[dict]) -> dict[str, dict]:
    """``{row: {category column: Difference}}``: each row's score minus the chance level
    (``grace.evaluation.tasks.chance_records``), per category it has tasks in."""
    baseline = summarize({"chance": chance}).iloc[0]
    margins = {}
    for label, reports in rows.items():
        types = {r["type"] for r in reports[0]["tasks"]}
        margins[label] = {
            CATEGORIES[t]: difference(
                estimate(reports, CATEGORIES[t]), Estimate(baseline[CATEGORIES[t]], 0.0)
            )
            for t in CATEGORIES
            if t in types
        }
    return margins


def chance_table(margins: dict[str, dict]) -> pd.DataFrame:
    """``chance_margins`` as a table of ``"+1.20 ± 0.90"`` strings, in bold where the row is
    above the chance level beyond the noise."""
    return pd.DataFrame.from_dict(
        {
            label: {c: f"**{d}**" if d.verdict == "higher" else str(d) for c, d in cols.items()}
            for label, cols in margins.items()
        },
        orient="index",
    )


def describe_chance(margins: dict[str, dict]) -> str:
    """For each row, in how many categories it is above the chance level beyond the noise."""
    counts = [
        f"{label} {sum(d.verdict == 'higher' for d in cols.values())} of {len(cols)}"
        for label, cols in margins.items()
    ]
    return "Categories above the chance level beyond the noise: " + "; ".join(counts) + "."


def means_note(records: list[dict]) -> str:
    """Why ``Mean (Task)`` and ``Mean (TaskType)`` agree or differ for a suite's tasks."""
    per_type: dict[str, int] = {}
    for record in records:
        per_type[record["type"]] = per_type.get(record["type"], 0) + 1
    if all(n == 1 for n in per_type.values()):
        return (
            f"{MEAN_TASK} equals {MEAN_TYPE} here: each of the {len(per_type)} task types has "
            "exactly one task, so averaging the tasks and averaging the types is the same mean."
        )
    counts = ", ".join(f"{t} {n}" for t, n in per_type.items())
    return (
        f"{MEAN_TASK} weights each type by its number of tasks ({counts}); {MEAN_TYPE} "
        "weights each type once."
    )


def table_json_markdown(rows: list[dict], tasks: list[str] | None = None) -> str:
    """``table.json``'s rows as the markdown table the book's pages carry (a test keeps the
    committed page equal to it): each cell the score, ``± std`` over draws where the row has
    draws, and the 95 % interval over queries in brackets; ``tasks`` (default all) and
    ``Mean (Task)`` as columns."""

    def cell(entry: dict) -> str:
        text = f"{entry['score']:.2f}"
        if entry.get("std") is not None:
            text += f" ± {entry['std']:.2f}"
        if entry.get("ci95"):
            text += f" [{entry['ci95'][0]:.1f}, {entry['ci95'][1]:.1f}]"
        return text

    tasks = tasks or list(rows[0]["tasks"])
    lines = ["| row | " + " | ".join([*tasks, MEAN_TASK]) + " |", "|" + "---|" * (len(tasks) + 2)]
    for row in rows:
        cells = [cell(row["tasks"][task]) for task in tasks] + [cell(row["mean_task"])]
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def interval_cell(row: dict, task: str) -> str:
    """``"label 8.08 [6.1, 10.2]"``: a ``table.json`` row's score on ``task`` and its interval."""
    entry = row["tasks"][task]
    return f"{row['label']} {entry['score']:.2f} [{entry['ci95'][0]:.1f}, {entry['ci95'][1]:.1f}]"


def interval_relation(row: dict, reference: dict, task: str) -> str:
    """``"above"``, ``"below"`` or ``"overlapping"``: ``row``'s 95 % interval on ``task``
    against ``reference``'s (``table.json`` rows)."""
    low, high = row["tasks"][task]["ci95"]
    base_low, base_high = reference["tasks"][task]["ci95"]
    return "above" if low > base_high else "below" if high < base_low else "overlapping"


def headline_answer(rows: list[dict], task: str = "RTReviewPlotRetrieval") -> str:
    """The landing page's answer, from ``table.json``'s rows: each GRACE row's test retrieval
    against the untrained model with a rationale, interval against interval."""
    by_label = {row["label"]: row for row in rows}
    base = by_label["base + rationale"]
    grace = [by_label[x] for x in ("GRACE supervised", "GRACE unsupervised") if x in by_label]
    verdicts = "; ".join(
        f"{interval_cell(row, task)}, {interval_relation(row, base, task)} it" for row in grace
    )
    others = ", ".join(
        interval_cell(by_label[x], task) for x in ("+CL", "MiniLM (reference)") if x in by_label
    )
    return (
        f"Test review → plot retrieval (nDCG@10, 95 % interval over queries) against "
        f"{interval_cell(base, task)}: {verdicts}. For comparison, {others}."
    )


def headline_figure(rows: list[dict], curves: dict[str, dict], task: str, chance: float | None):
    """The run at a glance: validation curves during training (left) and one test task's
    score per row with its 95 % interval over queries (right), chance as a dashed line.

    ``rows`` are ``table.json`` rows, ``curves`` the runs' validation curves by run name.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from grace.validation import plot_curve

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.8), width_ratios=[1, 1.1])
    for name, curve in curves.items():
        plot_curve(left, curve, name)
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_xlabel("training step")
    left.set_ylabel("validation MRR (± 1 s.e.)")
    left.set_title("During training: held-out reviews of training movies")
    left.legend(fontsize=8)
    labels = [row["label"] for row in rows]
    scores = [row["tasks"][task] for row in rows]
    for y, entry in enumerate(scores):
        low, high = entry["ci95"] or (entry["score"], entry["score"])
        right.errorbar(
            entry["score"],
            y,
            xerr=[[entry["score"] - low], [high - entry["score"]]],
            fmt="o",
            capsize=4,
            color="tab:blue",
        )
    if chance is not None:
        right.axvline(100 * chance, linestyle="--", color="gray")
        right.annotate(
            " chance",
            (100 * chance, 1.0),
            xycoords=("data", "axes fraction"),
            va="top",
            fontsize=8,
            color="gray",
        )
    right.set_yticks(range(len(labels)), labels)
    right.invert_yaxis()
    right.set_xlabel(f"{task} × 100 (95 % interval over queries)")
    right.set_title("After training: the held-out movies (test)")
    fig.tight_layout()
    return fig
