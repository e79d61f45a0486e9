"""The echo control: is a policy that copies its input better than the untrained model that is
simply handed its input as the rationale?

    python scripts/echo_control.py

Unsupervised GRACE learns to copy its input (``book/study.md``). This scores the untrained
model in ``echo`` mode, which needs no training and samples nothing, twice:

- on the test suite, with the ``cpu`` profile's encoder settings, as notebook 08 scores every
  row: ``results/echo/base_echo.json`` (reused when its key matches);
- on the study's validation split (``cpu-long``), paired with the study's step-0 point (greedy
  rationales), per query: ``results/echo/validation.json``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from grace.config import load_config  # noqa: E402
from grace.evaluation import evaluate  # noqa: E402
from grace.validation import paired_change  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "results" / "echo"


def suite_report() -> dict:
    config = load_config("cpu")
    settings = config.evaluation.encoder_settings() | {"mode": "echo"}
    suite = config.evaluation.suite
    return evaluate(config.run.model, suite, label="base, echo", folder=FOLDER, **settings).main


def validation_record() -> dict:
    """Step 0 of the study (greedy rationales) and echo on the same queries, paired."""
    config = load_config("cpu-long")
    model = config.run.model
    result = paired_change(config, model, model, after_changes={"mode": "echo"})
    return {
        "profile": "cpu-long",
        "model": model,
        "metric": "validation mrr (review -> plot, held-out reviews of training movies)",
        "queries": result["queries"],
        "mrr": {"step 0 (greedy rationale)": result["before"], "echo": result["after"]},
        "change": result["change"],
        "recorded": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def main() -> None:
    FOLDER.mkdir(parents=True, exist_ok=True)
    report = suite_report()
    print(f"test suite: {report['summary']}")
    record = validation_record()
    (FOLDER / "validation.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"validation: {record['mrr']}, paired change {record['change']}")


if __name__ == "__main__":
    main()
