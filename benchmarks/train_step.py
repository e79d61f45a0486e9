"""Seconds per GRPO step and where they go, for a training profile.

    python benchmarks/train_step.py --profile tiny
    python benchmarks/train_step.py --profile cpu [--steps 3] [--set key=value ...]

Split of each step: policy rollouts (trl's generate), reward = embedding the rollouts +
query/negative rollouts, and the rest (log-probs, loss, backward, optimizer). Medians over
the steps after the first (which includes warm-up). Profiles here generate once per
optimizer step (generation batch = one step's completions), so the parts add up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from collections import defaultdict

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from trl.extras import profiling  # noqa: E402

from grace.config import load_config  # noqa: E402
from grace.train import build_grpo_trainer  # noqa: E402

timings: dict[str, list[float]] = defaultdict(list)


def record(self, duration: float) -> None:  # replaces trl's profiling logger
    timings[self.name.split(".")[-1]].append(duration)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()

    profiling.ProfilingContext._log_metrics = record
    with tempfile.TemporaryDirectory() as output_dir:
        overrides = [
            *args.set,
            f"max_steps={args.steps}",
            f"output_dir={output_dir}",
            "save_steps=100000",
            "sample_every=0",
            "logging_steps=1",
        ]
        config = load_config(args.profile, overrides)
        trainer = build_grpo_trainer(config)
        trainer.train()
        seconds = trainer.reward_funcs[0].seconds
        steps = [h["step_time"] for h in trainer.state.log_history if "step_time" in h]

    print(
        f"profile={args.profile} model={config.run.model} threads={torch.get_num_threads()} "
        f"groups={config.grpo.prompts_per_generation} x {config.policy.num_generations} "
        f"rollouts, prompt<={config.policy.max_prompt_tokens} "
        f"completion<={config.policy.max_completion_length} tokens"
    )

    def median(values: list[float]) -> float:
        return statistics.median(values[1:] if len(values) > 1 else values)

    step = median(steps)
    parts = {
        "policy rollouts": median(timings["generate"]),
        "query/negative rollouts": median(seconds["anchor_rollouts"]),
        "reward embedding": median(seconds["embed_rollouts"]),
    }
    parts["loss/backward/other"] = step - sum(parts.values())
    print(f"seconds per step (median of {max(1, len(steps) - 1)}): {step:.2f}")
    for name, value in parts.items():
        print(f"  {name:26s} {value:7.2f} s  {100 * value / step:5.1f} %")


if __name__ == "__main__":
    main()
