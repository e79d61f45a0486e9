"""Results in the paper's layout: category averages, an overall average, and the paper's rows.

Averages follow mteb's leaderboard: ``Mean (Task)`` is the mean over all tasks of their main
scores, ``Mean (TaskType)`` the mean of the per-category means. The paper's printed Avg is
neither (see ``shared/GRACE.md``), so both are shown and the paper's Avg is kept as printed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

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
    """A GitHub-flavoured markdown table (empty cells for NaN; strings are kept as they are)."""
    header = ["", *table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, row in table.iterrows():
        cells = ["" if pd.isna(v) else v if isinstance(v, str) else f"{v:.{digits}f}" for v in row]
        lines.append("| " + " | ".join([str(label), *cells]) + " |")
    return "\n".join(lines)


def bar_chart(table: pd.DataFrame, path: str | Path | None = None, title: str = ""):
    """Grouped bars: one group per category (plus the overall means), one bar per row."""
    import matplotlib.pyplot as plt

    columns = [c for c in table.columns if table[c].notna().any()]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(columns)), 4))
    width = 0.8 / max(1, len(table))
    for i, (label, row) in enumerate(table.iterrows()):
        positions = [j + i * width for j in range(len(columns))]
        ax.bar(positions, [row[c] for c in columns], width, label=str(label))
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
