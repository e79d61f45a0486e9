"""Headroom before training, on the offline tasks (``grace.headroom``).

    python scripts/headroom.py                      # every task, 32 and 64 tokens, 8 draws
    python scripts/headroom.py --tasks sentiment    # one task

For each task: 8 sampled rationales per training document from the untrained SmolLM2, each
reward's preferred draw, and the change on held-out queries against greedy rationales
(paired, with standard errors bootstrapped over the task's clusters). Writes
``results/headroom/<task>-<tokens>.json``; a task whose records exist is skipped (resumable
task by task). Encoder settings are the study's validation settings (``cpu-long``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from grace.config import load_config  # noqa: E402
from grace.data import TASKS  # noqa: E402
from grace.encoder import GraceEncoder  # noqa: E402
from grace.headroom import REWARDS, headroom_markdown, measure_headroom  # noqa: E402
from grace.validation import validation_encoder  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "results" / "headroom"


def record_path(task: str, tokens: int) -> Path:
    return FOLDER / f"{task}-{tokens}.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--lengths", nargs="+", type=int, default=[32, 64])
    parser.add_argument("--draws", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64, help="rows decoded together")
    args = parser.parse_args()
    config = load_config("cpu-long")
    settings = vars(validation_encoder(config)) | {"batch_size": args.batch_size}
    encoder = GraceEncoder.from_pretrained(config.run.model, **settings)
    FOLDER.mkdir(parents=True, exist_ok=True)
    for name in args.tasks:
        if all(record_path(name, tokens).exists() for tokens in args.lengths):
            print(f"{name}: recorded, skipped")
            continue
        records = measure_headroom(encoder, TASKS[name](), tuple(args.lengths), args.draws, REWARDS)
        for record in records:
            record |= {
                "model": config.run.model,
                "encoder": {k: settings[k] for k in ("max_input_tokens", "system_prompt")},
                "excluded_prefix_tokens": encoder.prefix_length,
                "recorded": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            }
            path = record_path(name, record["rationale_tokens"])
            path.write_text(json.dumps(record, indent=1) + "\n")
        print(headroom_markdown(records), flush=True)


if __name__ == "__main__":
    main()
