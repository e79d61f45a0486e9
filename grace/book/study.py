"""The GRACE study: does GRPO training improve embeddings here, for what budget?

Reads the study's sweep records (``scripts/sweep.py``, ``results/sweep/study-*.json``): each is a
validation curve whose points also carry the prompts seen, the training CPU seconds and the
collapse diagnostics. GRACE and +CL are put on the same axes, per prompt and per second, and
the budget GRACE needs to match +CL's change is read off the curves.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from grace.book.notebooks import book_label
from grace.decision import paired
from grace.diagnostics import first_to_last, formatted
from grace.evaluation.results import (
    interval_cell,
    interval_relation,
    table_json_markdown,
    table_row,
)
from grace.validation import describe, verdict

PREFIX = "study-"
DIAGNOSTICS = {
    "distinct_2": "distinct-2",
    "copy_share": "copies",
    "fence_share": "fences",
    "mean_cosine": "mean cos",
}


def study_records(folder: str | Path) -> list[dict]:
    """The study's records, by name: those whose curve has the budget of each point."""
    paths = sorted(Path(folder).glob(f"{PREFIX}*.json"))
    records = [json.loads(path.read_text()) for path in paths]
    return [r for r in records if "prompts_seen" in r["curve"] and "seconds" in r["curve"]]


def label(record: dict) -> str:
    """A record's name as the book writes it (``frozen``, ``+CL``, ...)."""
    return book_label(record["variant"])


def is_baseline(record: dict) -> bool:
    return record["settings"]["config"]["run"]["method"] != "grace"


def changes(record: dict) -> str:
    """What a variant changes in training: its overrides less the run length and validation
    cadence (the steps column and the curve show those)."""
    shown = {
        key: value
        for key, value in record["overrides"].items()
        if key != "optim.max_steps" and not key.startswith("validation.")
    }
    return ", ".join(f"{key}={value}" for key, value in shown.items()) or "-"


def best_point(curve: dict) -> int:
    """Index of the point with the highest paired change (step 0 excluded when there are
    others)."""
    changes = curve["change"][1:] or curve["change"]
    return int(np.argmax(changes)) + (1 if len(curve["change"]) > 1 else 0)


def budget_to_match(record: dict, target: float) -> dict | None:
    """The first point whose paired change reaches ``target``: its step, prompts seen and CPU
    seconds; None when no point does."""
    curve = record["curve"]
    for index, change in enumerate(curve["change"]):
        if index and change >= target:
            return {
                "step": curve["steps"][index],
                "prompts_seen": curve["prompts_seen"][index],
                "seconds": curve["seconds"][index],
            }
    return None


def study_rows(records: list[dict]) -> list[dict]:
    """One row per record: the budget spent, the best and the last paired change, the verdict
    and the diagnostics at step 0 and at the end."""
    rows = []
    for record in records:
        curve = record["curve"]
        best, last = best_point(curve), len(curve["steps"]) - 1
        row = {
            "variant": label(record),
            "changes": changes(record),
            "queries": curve["queries"],
            "steps": f"{curve['steps'][last]}"
            + ("" if record.get("finished", True) else " (stopped)"),
            "prompts": curve["prompts_seen"][last],
            "CPU h": f"{curve['seconds'][last] / 3600:.2f}",
            "MRR at 0": curve["values"][0],
            "best change": (curve["change"][best], curve["change_stderr"][best]),
            "at step": curve["steps"][best],
            "last change": (curve["change"][last], curve["change_stderr"][last]),
            "verdict": verdict(curve),
        }
        diagnostics = curve.get("diagnostics")
        for key, name in DIAGNOSTICS.items():
            pair = [diagnostics[0].get(key), diagnostics[last].get(key)] if diagnostics else []
            row[name] = pair if pair and pair[0] is not None else None  # baselines write none
        rows.append(row)
    return rows


def describe_study(records: list[dict]) -> str:
    """The study's numbers in sentences: per GRACE variant its best and last paired change and
    how its rationales changed; then the budget each needs to match +CL's change."""
    if not records:
        return "No study records yet."
    baselines = [r for r in records if is_baseline(r)]
    lines = []
    for record in (r for r in records if not is_baseline(r)):
        curve = record["curve"]
        best, last = best_point(curve), len(curve["steps"]) - 1
        line = (
            f"- **{label(record)}**: paired change {curve['change'][last]:+.3f} ± "
            f"{curve['change_stderr'][last]:.3f} after {curve['prompts_seen'][last]} prompts "
            f"({curve['seconds'][last] / 3600:.1f} CPU h; best {curve['change'][best]:+.3f} ± "
            f"{curve['change_stderr'][best]:.3f} at step {curve['steps'][best]}), "
            f"{verdict(curve)}"
        )
        diagnostics = curve.get("diagnostics") or []
        if diagnostics:
            pair = (diagnostics[0], diagnostics[last])
            line += (
                f"; distinct-2 {first_to_last(pair, 'distinct_2', '.2f')}, copies "
                f"{first_to_last(pair, 'copy_share', '.0%')}, fences "
                f"{first_to_last(pair, 'fence_share', '.0%')}, "
                f"mean cosine {first_to_last(pair, 'mean_cosine', '.2f')}"
            )
        lines.append(line + ".")
    for baseline in baselines:
        curve = baseline["curve"]
        target, last = curve["change"][-1], len(curve["steps"]) - 1
        lines.append(
            f"- **{label(baseline)}** (the baseline): {target:+.3f} ± "
            f"{curve['change_stderr'][last]:.3f} after {curve['prompts_seen'][last]} pairs "
            f"({curve['seconds'][last] / 3600:.1f} CPU h), {verdict(curve)}."
        )
        for record in (r for r in records if not is_baseline(r)):
            reached = budget_to_match(record, target)
            lines.append(
                f"  - {label(record)} reaches it "
                + (
                    f"after {reached['prompts_seen']} prompts, {reached['seconds'] / 3600:.1f} "
                    f"CPU h."
                    if reached
                    else f"at no point of its run ({record['curve']['prompts_seen'][-1]} "
                    f"prompts, {record['curve']['seconds'][-1] / 3600:.1f} CPU h)."
                )
            )
    return "\n".join(lines)


ECHO_ROWS = ["base, direct", "base + rationale", "base, echo", "GRACE unsupervised"]


def echo_control(
    table: list[dict], echo: dict, validation: dict, task: str = "RTReviewPlotRetrieval"
) -> str:
    """The echo control in the book's words: the untrained model handed its input as the
    rationale (``echo``, one report) beside the ``table.json`` rows it explains, on the test
    suite; then its paired change on the study's validation (``scripts/echo_control.py``)."""
    by_label = {row["label"]: row for row in table}
    by_label["base, echo"] = table_row("base, echo", [echo])
    rows = [by_label[name] for name in ECHO_ROWS]
    direct, rationale, copy, trained = rows
    test = (
        f"Test {task} (95 % intervals over queries): {interval_cell(trained, task)} against "
        f"{interval_cell(copy, task)}: {interval_relation(trained, copy, task)}. base, echo "
        f"against {interval_cell(rationale, task)}: {interval_relation(copy, rationale, task)}; "
        f"against {interval_cell(direct, task)}: {interval_relation(copy, direct, task)}."
    )
    (step0, (mean0, error0)), (_, (mean, error)) = validation["mrr"].items()
    change, change_error = validation["change"]
    word = paired(change, change_error).verdict
    held_out = (
        f"Validation ({validation['profile']}, {validation['queries']} queries): echo MRR "
        f"{mean:.4f} ± {error:.4f} against {mean0:.4f} ± {error0:.4f} at {step0}, paired "
        f"change {change:+.4f} ± {change_error:.4f}: {word} at three standard errors."
    )
    return f"{table_json_markdown(rows, [task])}\n\n{test}\n\n{held_out}"


def pooling_change(record: dict) -> str:
    """``scripts/pooling_change.py``'s record as a table: validation MRR under the old rule
    and the reference's, the paired change (error bootstrapped over movies) and its verdict
    at three errors, and how close the embeddings sit (mean pairwise cosine)."""
    old, new = record["excluded_tokens"]
    lines = [
        f"| embedding | MRR, {record['excluded_tokens'][old]} left out | MRR, "
        f"{record['excluded_tokens'][new]} left out | paired change | verdict | mean cosine |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in record["rows"].items():
        change, error = row["change"], row["change_stderr_clustered"]
        cosine = row["mean_pairwise_cosine"]
        lines.append(
            f"| {name} | {row['mrr'][old][0]:.4f} | {row['mrr'][new][0]:.4f} | "
            f"{change:+.4f} ± {error:.4f} | {paired(change, error).verdict} | "
            f"{cosine[old]:.3f} → {cosine[new]:.3f} |"
        )
    return (
        "\n".join(lines)
        + f"\n\n{record['model']}, {record['queries']} validation queries of {record['movies']}"
        " movies (`cpu-long` validation settings)."
    )


def task_run_reading(record: dict, name: str) -> str:
    """A run on a task other than the study's, in the book's words: its validation curve
    (``grace.validation.describe``, clustered errors where recorded), the budget it spent,
    its collapse diagnostics first to last, and the first rollout it logged at the end."""
    curve = record["curve"]
    ends = (curve["diagnostics"][0], curve["diagnostics"][-1])
    last = record["rollouts"][-1] if record.get("rollouts") else None
    quote = f" At step {last['logged_step']} it wrote: `{last['rollouts'][0]}`" if last else ""
    pace = f" ({record['median_step_seconds']} s a step)" if record["median_step_seconds"] else ""
    seen = "pairs" if is_baseline(record) else "prompts"
    diagnostics = [f"mean cosine of the embeddings {first_to_last(ends, 'mean_cosine', '.2f')}"]
    if not is_baseline(record):  # a baseline validates direct: it writes no rationales
        diagnostics[:0] = [
            f"distinct-2 of its validation rationales {first_to_last(ends, 'distinct_2', '.2f')}",
            f"copies of the input {first_to_last(ends, 'copy_share', '.2f')}",
        ]
    listed = ", ".join(diagnostics)
    return (
        f"{describe(curve, name)} It saw {curve['prompts_seen'][-1]} {seen} in "
        f"{curve['seconds'][-1] / 3600:.1f} CPU hours{pace}. "
        f"{listed[0].upper()}{listed[1:]}.{quote}"
    )


def swap_markdown(records: dict[str, dict]) -> str:
    """``scripts/swap.py``'s records (label -> record) as one table: a row per cell of the
    swap test, per trained model its validation MRR and the change from the base writing and
    embedding, ± its error bootstrapped over the task's clusters, and the verdict at three."""
    labels = list(records)
    first = next(iter(records.values()))
    header = " | ".join(f"{label}: MRR | change | verdict" for label in labels)
    lines = [f"| cell | {header} |", "|---|" + "---|---|---|" * len(labels)]
    for cell in first["rows"]:
        cells = []
        for record in records.values():
            row = record["rows"][cell]
            change, error = row["change"], row["change_stderr_clustered"]
            cells.append(
                f"{row['mrr'][0]:.3f} | {change:+.3f} ± {error:.3f} | "
                f"{paired(change, error).verdict}"
            )
        lines.append(f"| {cell} | {' | '.join(cells)} |")
    return (
        "\n".join(lines)
        + f"\n\n{first['task']} {first.get('split', 'validation')}, {first['queries']} queries"
        f" in {first['clusters']}"
        " clusters; greedy rationales of the training length; *trained* is each column's model."
    )


def study_markdown(records: list[dict]) -> str:
    """``study_rows`` as the markdown table the book's study chapter carries."""

    def cell(value) -> str:
        if value is None:
            return "-"
        if isinstance(value, tuple):
            return f"{value[0]:+.3f} ± {value[1]:.3f}"
        if isinstance(value, list):
            return " → ".join(formatted(v, ".2f") for v in value)
        if isinstance(value, float):
            return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"
        return str(value)

    rows = study_rows(records)
    if not rows:
        return "No study records yet: run `python scripts/sweep.py study-frozen` (hours)."
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(row[key]) for key in header) + " |" for row in rows]
    return "\n".join(lines)


def study_figure(records: list[dict], path: str | Path | None = None):
    """Validation change (± 1 standard error, paired) against prompts seen and against training
    CPU hours, GRACE variants and +CL on the same axes; below, the distinct-2 of the GRACE runs'
    validation rationales and the mean pairwise cosine of every run's validation embeddings."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, record in enumerate(records):
        curve = record["curve"]
        change, error = np.array(curve["change"]), np.array(curve["change_stderr"])
        colour = colours[index % len(colours)]  # one colour per run in every panel
        style = {
            "linestyle": "--" if is_baseline(record) else "-",
            "marker": "o",
            "ms": 3,
            "color": colour,
        }
        for ax, x in (
            (axes[0, 0], np.array(curve["prompts_seen"])),
            (axes[0, 1], np.array(curve["seconds"]) / 3600),
        ):
            ax.plot(x, change, label=label(record), **style)
            ax.fill_between(x, change - error, change + error, alpha=0.15, color=colour)
        diagnostics = curve.get("diagnostics") or []
        prompts = curve["prompts_seen"]
        for ax, key in ((axes[1, 0], "distinct_2"), (axes[1, 1], "mean_cosine")):
            values = [d.get(key) for d in diagnostics]
            if values and values[0] is not None:  # distinct-2: GRACE only (baselines write none)
                # A point without word pairs (every rationale one unbroken string) is a gap.
                shown = [np.nan if v is None else v for v in values]
                ax.plot(prompts, shown, label=label(record), **style)
    axes[0, 0].set(xlabel="training prompts (GRACE) or pairs (+CL) seen", ylabel="paired change")
    axes[0, 1].set(xlabel="training CPU hours (validation excluded)", ylabel="paired change")
    axes[1, 0].set(xlabel="training prompts seen", ylabel="distinct-2 of validation rationales")
    axes[1, 1].set(
        xlabel="training prompts or pairs seen", ylabel="mean pairwise cosine (validation)"
    )
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    for ax in axes[0]:
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_title("validation MRR change from step 0 (± 1 s.e., same queries)", fontsize=10)
    if records:
        for ax in (axes[0, 0], axes[1, 0], axes[1, 1]):  # distinct-2 has GRACE runs only
            ax.legend(fontsize=8)
    figure.suptitle("The GRACE study: SmolLM2-135M on 2 CPU cores (cpu-long profile)")
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=110)
    return figure
