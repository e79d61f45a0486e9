"""Seconds per GRPO step and where they go, for a training profile; old path against new.

    python benchmarks/train_step.py --profile tiny
    python benchmarks/train_step.py --profile cpu [--steps 3] [--set key=value ...]
    python benchmarks/train_step.py --profile cpu --compare      # old and new path, speedup
    python benchmarks/train_step.py --profile cpu --old          # the old path alone

The *new* path is what ``grace train`` runs (``GraceGRPOTrainer``): each prompt prefilled once
per group, the rollouts' embeddings pooled during sampling, query/negative rollouts in the same
batch, the loss's log-probabilities with each prompt run once. The *old* path is trl's own
sampling and loss, a second embedding pass and a separate anchor batch, with the negative rolled
out at every step (``reward.negative_rollouts=always``). ``--compare`` trains both in one
process on the same data from the same seed, each for one warm-up step (not counted) and
``--steps`` measured steps, and ends with ``speedup: X.XXx`` (median step time, old / new).

Split of a step (means over the measured steps, so the parts add up to the mean step):
rollouts (sampling; for the new path the anchors too), anchor rollouts and reward embedding
(old path only), the loss's forward pass (trl's ``compute_loss``), the optimizer step, and the
rest: the backward pass and trl's bookkeeping. Profiles here generate once per optimizer step.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time
from collections import defaultdict

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import TrainerCallback, set_seed  # noqa: E402
from trl.extras import profiling  # noqa: E402

from grace.config import load_config  # noqa: E402
from grace.train import build_grpo_trainer  # noqa: E402

#: trl's profiled sections, per global step: name -> step -> seconds.
profiled: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))


def record(self, duration: float) -> None:  # replaces trl's profiling logger
    profiled[self.name.split(".")[-1]][self.step or 0] += duration


class StepClock(TrainerCallback):
    """Wall time of every optimizer step and of its optimizer update."""

    def __init__(self) -> None:
        self.steps: list[float] = []
        self.optimizer: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self.begin = time.perf_counter()

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.before_update = time.perf_counter()

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.optimizer.append(time.perf_counter() - self.before_update)

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(time.perf_counter() - self.begin)


def measure(config, single_pass: bool) -> dict:
    """Train ``config.optim.max_steps`` steps; per-step seconds by part, warm-up step dropped."""
    profiled.clear()
    set_seed(config.run.seed)
    trainer = build_grpo_trainer(config, single_pass=single_pass)
    clock = StepClock()
    trainer.add_callback(clock)
    trainer.train()
    measured = range(1, len(clock.steps))  # step 0 warms up
    rows = []
    for step in measured:
        if single_pass:
            rollouts = (
                trainer.grace_seconds["prefill"][step] + trainer.grace_seconds["decode"][step]
            )
            anchors = embedding = 0.0
        else:
            rollouts = profiled["generate"][step]
            anchors = trainer.grace_seconds["anchor_rollouts"][step]
            embedding = trainer.grace_seconds["embed_rollouts"][step]
        row = {
            "rollouts": rollouts,
            "anchor rollouts": anchors,
            "reward embedding": embedding,
            "loss forward": profiled["compute_loss"][step],
            "optimizer step": clock.optimizer[step],
        }
        row["backward + other"] = clock.steps[step] - sum(row.values())
        row["step"] = clock.steps[step]
        if single_pass:
            row["  of which prefill"] = trainer.grace_seconds["prefill"][step]
        rows.append(row)
    del trainer
    gc.collect()
    return {name: [row[name] for row in rows] for name in rows[0]}


class TokenCount:
    """Real (unpadded) tokens of each kind that the new path's steps compute, for the floor."""

    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = defaultdict(list)

    def install(self) -> None:
        import grace.rollouts as rollouts

        sample, logps = rollouts.sample_rollouts, rollouts.shared_prefix_logps

        def counted_sample(model, prompt_ids, *args, **kwargs):
            out = sample(model, prompt_ids, *args, **kwargs)
            distinct = {tuple(p) for p in prompt_ids}
            self.counts["sampling prefill"].append(sum(len(p) - 1 for p in distinct))
            self.counts["sampling decode"].append(sum(len(c) + 1 for c in out.completion_ids))
            return out

        def counted_logps(model, input_ids, attention_mask, logits_to_keep, compute_entropy):
            width = input_ids.shape[1] - logits_to_keep
            prompts = {
                tuple(row[m.bool()].tolist())
                for row, m in zip(input_ids[:, :width], attention_mask[:, :width], strict=True)
            }
            grad = torch.is_grad_enabled()
            self.counts["loss prefix" if grad else "other prefix"].append(
                sum(len(p) - 1 for p in prompts)
            )
            self.counts["loss suffix" if grad else "other suffix"].append(
                int(attention_mask[:, width - 1 :].sum())
            )
            return logps(model, input_ids, attention_mask, logits_to_keep, compute_entropy)

        rollouts.sample_rollouts = counted_sample
        rollouts.shared_prefix_logps = counted_logps


def floor(config, counts: TokenCount, steps: int) -> None:
    """FLOPs of a step (real tokens, matmuls only) over the measured prefill rate."""
    from grace.models import load_model

    model, tokenizer = load_model(config.run.model, dtype=config.adaptation.torch_dtype)
    text = model.config.get_text_config()
    head = text.vocab_size * text.hidden_size
    body = sum(p.numel() for p in model.parameters()) - head * (
        1 if text.tie_word_embeddings else 2
    )
    top = config.adaptation.train_top_layers
    trained_share = 1.0 if top is None else top / text.num_hidden_layers
    per_step = {name: sum(v) / steps for name, v in counts.counts.items()}
    flops = {
        "sampling": 2 * body * (per_step["sampling prefill"] + per_step["sampling decode"])
        + 2 * head * per_step["sampling decode"],
        # forward 2, backward 4 (activations and weights) FLOPs per parameter and token
        "loss forward": 2 * body * (per_step["loss prefix"] + per_step["loss suffix"])
        + 2 * head * per_step["loss suffix"],
        "loss backward": 4
        * body
        * trained_share
        * (per_step["loss prefix"] + per_step["loss suffix"])
        + (4 if top is None else 2) * head * per_step["loss suffix"],  # frozen head: 2
    }
    # Prefill rate: no-grad forward passes over 8 prompts of 140 tokens, best of 3.
    ids = torch.randint(100, text.vocab_size, (8, 140))
    seconds = []
    with torch.no_grad():
        for _ in range(3):
            start = time.perf_counter()
            model(input_ids=ids, logits_to_keep=1)
            seconds.append(time.perf_counter() - start)
    rate = ids.numel() / min(seconds)
    flop_rate = 2 * body * rate
    total = sum(flops.values())
    print(
        f"floor: {total / 1e12:.2f} TFLOP per step (real tokens per step: "
        + ", ".join(f"{k} {v:.0f}" for k, v in per_step.items())
        + f"); prefill {rate:.0f} tokens/s = {flop_rate / 1e9:.0f} GFLOP/s "
        f"-> {total / flop_rate:.1f} s per step"
    )
    for name, value in flops.items():
        print(f"  {name:22s} {value / flop_rate:7.2f} s at the prefill rate")


def report(label: str, parts: dict) -> float:
    step = statistics.median(parts["step"])
    mean = statistics.mean(parts["step"])
    print(
        f"{label}: {step:.2f} s per step (median of {len(parts['step'])}; mean {mean:.2f} s; "
        f"steps {', '.join(f'{s:.1f}' for s in parts['step'])})"
    )
    for name, values in parts.items():
        if name != "step":
            value = statistics.mean(values)
            print(f"  {name:22s} {value:7.2f} s  {100 * value / mean:5.1f} %")
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--steps", type=int, default=3, help="measured steps (plus one warm-up)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--compare", action="store_true", help="old path, then new path")
    parser.add_argument("--old", action="store_true", help="the old path only")
    parser.add_argument(
        "--floor", action="store_true", help="estimate the new path's floor: FLOPs / prefill rate"
    )
    args = parser.parse_args()

    profiling.ProfilingContext._log_metrics = record
    with tempfile.TemporaryDirectory() as output_dir:
        overrides = [
            *args.set,
            f"max_steps={args.steps + 1}",
            f"output_dir={output_dir}",
            "save_steps=100000",
            "validation.every=0",
        ]
        config = load_config(args.profile, overrides)
        print(
            f"profile={args.profile} model={config.run.model} threads={torch.get_num_threads()} "
            f"groups={config.grpo.prompts_per_generation} x {config.policy.num_generations} "
            f"rollouts, prompt<={config.policy.max_prompt_tokens} "
            f"completion<={config.policy.max_completion_length} tokens, micro-batches of "
            f"{config.grpo.per_device_train_batch_size} x {config.grpo.gradient_accumulation_steps}"
            f", logging_steps={config.logging.logging_steps}",
            flush=True,
        )
        old_config = config.with_changes(["reward.negative_rollouts=always"])
        old = new = None
        if args.compare or args.old:
            old = report("old path", measure(old_config, single_pass=False))
        if not args.old:
            counts = TokenCount()
            if args.floor:
                counts.install()
            new = report("new path", measure(config, single_pass=True))
            if args.floor:
                floor(config, counts, args.steps + 1)
    if old and new:
        print(f"speedup: {old / new:.2f}x")


if __name__ == "__main__":
    main()
