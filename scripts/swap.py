"""Writer or weights? The swap test of trained run folders against their base model (issue 32).

For each run folder, both models write greedy rationales for the run's validation queries and
documents, and each model embeds both sets (2 x 2), plus each model's direct and echo rows;
every cell is paired per query with the base model writing and embedding
(``grace.validation.swap_test``). Records go to ``results/swap/<name>.json``; the study
chapter reads them.

    python scripts/swap.py task-lee-topic-cl /root/grace-runs/task-lee-topic-cl
    python scripts/swap.py task-lee-topic-cl-test /root/grace-runs/task-lee-topic-cl --split test
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from grace.validation import run_swap_test  # noqa: E402

RESULTS = Path("results/swap")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help=f"record name: {RESULTS}/<name>.json")
    parser.add_argument("folder", type=Path, help="a trained run folder")
    parser.add_argument("--note", default="", help="how the run was made")
    parser.add_argument(
        "--split",
        choices=("validation", "test"),
        default="validation",
        help="the task's test queries are read once, after every choice is made on validation",
    )
    args = parser.parse_args()
    if Path(args.name).name != args.name:
        parser.error(f"NAME is a file name under {RESULTS}, not a path: {args.name!r}")
    started = time.perf_counter()
    record = run_swap_test(args.folder, args.split) | {
        "name": args.name,
        "note": args.note,
        "seconds": round(time.perf_counter() - started, 1),
        "recorded": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(record, indent=1))
    for cell, row in record["rows"].items():
        print(
            f"{cell:28s} MRR {row['mrr'][0]:.3f}  change {row['change']:+.3f}"
            f" ± {row['change_stderr_clustered']:.3f}"
        )


if __name__ == "__main__":
    main()
