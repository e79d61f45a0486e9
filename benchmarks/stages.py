"""Where the time of one reproduction went: per notebook, per training run, per evaluation.

    python benchmarks/stages.py runs/cpu

Reads what a ``grace reproduce`` run leaves in its output folder (``reproduce.json``, each
training run's ``log_history.json``, the evaluation reports in ``results/``) and prints the
wall times, so a slow stage is found without rerunning anything.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from grace.runs import HISTORY_FILE, log_history


def print_rows(title: str, rows: dict[str, float], total: float | None = None) -> None:
    total = total or sum(rows.values()) or 1.0
    print(f"\n{title}")
    for name, seconds in rows.items():
        print(f"  {name:48s} {seconds:8.1f} s  {100 * seconds / total:5.1f} %")
    print(f"  {'total':48s} {sum(rows.values()):8.1f} s")


def training_runs(run: Path) -> None:
    for history_path in sorted(run.glob(f"*/{HISTORY_FILE}")):
        history = log_history(history_path.parent)
        steps = [h for h in history if "step_time" in h or "loss" in h]
        final = history[-1]
        line = f"  {history_path.parent.name:22s} {len(steps):3d} steps, "
        line += f"{final.get('train_runtime', float('nan')):7.1f} s"
        times = [h["step_time"] for h in steps if "step_time" in h]
        if times:
            line += f", step median {statistics.median(times):.1f} s"
        parts = {
            "query/negative rollouts": "grace/seconds_anchor_rollouts",
            "reward embedding": "grace/seconds_embed_rollouts",
        }
        for name, key in parts.items():
            values = [h[key] for h in steps if key in h]
            if values:
                line += f", {name} median {statistics.median(values):.1f} s"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="output folder of `grace reproduce`")
    run = parser.parse_args().run

    summary = json.loads((run / "reproduce.json").read_text())
    notebooks = {name: record["seconds"] for name, record in summary["notebooks"].items()}
    print(f"run {run} (profile {summary.get('profile')})")
    print_rows("notebooks (papermill wall time)", notebooks)
    print("\ntraining runs (trainer's own clock)")
    training_runs(run)
    reports = {}
    for path in sorted((run / "results").glob("*.json")):
        report = json.loads(path.read_text())
        if isinstance(report, dict) and "seconds" in report and "label" in report:
            reports[report["label"]] = report["seconds"]
    print_rows("evaluation reports (mteb wall time, whole suite)", reports)


if __name__ == "__main__":
    main()
