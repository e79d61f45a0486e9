"""A small tuning sweep of supervised GRACE on the ``cpu`` profile (issue 6).

Each variant changes one or two settings of the profile, trains 8 GRPO steps from the same
base model and data, and is scored on the offline suite exactly as notebook 8 scores the
GRACE rows (one sampled rationale per text, same length, batch and sampling seed). Reports go
to ``results/sweep/<variant>.json`` (the book's sweep table reads them); a variant whose
report exists is skipped, so the script resumes after an interruption.

    python scripts/sweep.py                 # every variant
    python scripts/sweep.py lr5e-5 lora     # some
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from grace.config import load_config  # noqa: E402
from grace.evaluation import GraceMTEBModel, evaluate  # noqa: E402
from grace.runs import log_history, trained_model  # noqa: E402

PROFILE = "cpu"
VARIANTS = {
    "lr1e-5": {},  # the profile as it was: full fine-tuning at 1e-5
    "lr5e-5": {"learning_rate": 5e-5},
    "lora-lr2e-4": {"lora": True, "learning_rate": 2e-4},
    "lr5e-5-group8": {"learning_rate": 5e-5, "num_generations": 8, "prompts_per_generation": 2},
    "lr5e-5-temp0.7": {"learning_rate": 5e-5, "policy.temperature": 0.7},
}
RESULTS = Path("results/sweep")


def run_variant(name: str, overrides: dict) -> dict:
    config = load_config(PROFILE, {**overrides, "output_dir": f"runs/sweep/{name}"})
    model_dir = trained_model(config)
    settings = config.evaluation.encoder_settings(num_rationales=1)
    encoder = GraceMTEBModel(str(model_dir), **settings)
    report = evaluate(encoder, config.evaluation.suite, label=f"GRACE supervised ({name})")
    history = log_history(model_dir)
    rewards = [entry["reward"] for entry in history if "reward" in entry]
    return {
        "variant": name,
        "overrides": overrides,
        "profile": PROFILE,
        "train_seconds": round(history[-1]["train_runtime"], 1),  # the trainer's own clock
        "rewards": rewards,
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        **{k: report[k] for k in ("label", "seconds", "tasks", "summary")},
    }


def main(names: list[str]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in names or list(VARIANTS):
        path = RESULTS / f"{name}.json"
        if path.exists():
            print(f"{name}: done before, skipped")
            continue
        record = run_variant(name, VARIANTS[name])
        path.write_text(json.dumps(record, indent=1))
        print(
            f"{name}: Mean (Task) {record['summary']['Mean (Task)']:.2f}, "
            f"train {record['train_seconds']} s, eval {record['seconds']} s",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
