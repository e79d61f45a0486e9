"""How long a profile's GRACE training and its rationale-mode evaluation will take on this
machine, from rates measured here in a few seconds, before committing an hour to it.

A GRPO step samples every rollout of its prompts (and the reward's anchors) to the cap, then
runs a forward and backward pass over them; evaluation samples one rationale per text and
draw. Both are timed here on the profile's own model and texts: a short generation at two
caps separates the fixed cost of a batch (the prefill) from the cost of one decoding step,
and one forward + backward + optimizer step gives the update. Every rollout is assumed to run
to the cap, so the training figure is an upper bound where rationales end early.
"""

from __future__ import annotations

import textwrap
import time
from dataclasses import dataclass, replace

import torch

from grace.config import TrainConfig
from grace.encoder import GraceEncoder
from grace.models import load_model

#: The two caps a measurement decodes to: their difference is pure decoding.
SHORT, LONG = 2, 10


@dataclass(frozen=True)
class Rates:
    """Seconds measured on this machine for one batch of ``rows`` prompts."""

    rows: int
    batch_seconds: float  # prefill and everything else that does not grow with the cap
    step_seconds: float  # one decoding step of the whole batch
    update_seconds: float  # forward + backward over one micro-batch, and an optimizer step


@dataclass(frozen=True)
class Estimate:
    """Minutes per part, and how each was reckoned."""

    training_minutes: float
    evaluation_minutes_per_1000_texts: float
    arithmetic: list[str]

    def __str__(self) -> str:
        # Wrapped so that a notebook page or a terminal shows it without scrolling sideways.
        lines = [textwrap.fill(line, 88, subsequent_indent="  ") for line in self.arithmetic]
        lines.append("")
        lines.append(f"GRACE training: at most {self.training_minutes:.1f} min")
        lines.append(
            f"Evaluation in rationale mode: {self.evaluation_minutes_per_1000_texts:.1f} min per "
            "1,000 texts"
        )
        return "\n".join(lines)


def _timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def _decoding(model, tokenizer, config: TrainConfig, texts: list[str], rows: int) -> Rates:
    """Generation of ``rows`` prompts at two caps: the fixed part and one step's cost."""
    texts = (texts * (rows // len(texts) + 1))[:rows]
    seconds = {}
    for cap in (SHORT, LONG):
        encoder = GraceEncoder(
            model,
            tokenizer,
            max_new_tokens=cap,
            batch_size=rows,
            system_prompt=config.policy.system_prompt,
            max_input_tokens=config.policy.max_prompt_tokens,
        )
        encoder.encode(texts[:2], show_progress_bar=False)  # warm-up
        seconds[cap] = _timed(lambda e=encoder: e.encode(texts, show_progress_bar=False))
    step = max(seconds[LONG] - seconds[SHORT], 0.0) / (LONG - SHORT)
    return Rates(rows, max(seconds[SHORT] - SHORT * step, 0.0), step, 0.0)


def measure_rates(config: TrainConfig) -> tuple[Rates, Rates]:
    """Rates on this machine for the profile's training batch (its rollouts and anchors, and
    one update of a micro-batch) and for its evaluation batch."""
    model, tokenizer = load_model(config.run.model, dtype=config.adaptation.torch_dtype)
    texts = [row["text"] for row in config.training_rows(tokenizer)[:64]]
    if not texts:
        raise ValueError("The profile's training data is empty: nothing to time.")
    training = _decoding(model, tokenizer, config, texts, rollout_rows(config))
    evaluation = _decoding(model, tokenizer, config, texts, config.evaluation.batch_size)

    micro = config.grpo.per_device_train_batch_size
    length = config.policy.max_prompt_tokens + config.policy.max_completion_length
    # Any ids time the same; fixed ones keep every draw in grace.rationale's seeded sampler.
    ids = torch.zeros(micro, length, dtype=torch.long, device=model.device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-12)

    def update() -> None:
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    model.train()
    update()  # warm-up: allocations and the optimizer's state
    return replace(training, update_seconds=_timed(update)), evaluation


def rollout_rows(config: TrainConfig) -> int:
    """Rows a GRPO step samples: its completions and the reward's anchors."""
    completions = config.grpo.per_device_train_batch_size * config.grpo.gradient_accumulation_steps
    prompts = max(1, completions // config.policy.num_generations)
    return completions + prompts * (2 if config.run.setting == "supervised" else 1)


def estimate(config: TrainConfig, training: Rates, evaluation: Rates) -> Estimate:
    """Scale the measured rates to the profile's steps, caps and draws."""
    policy, grpo, settings = config.policy, config.grpo, config.evaluation
    # The rollouts and anchors of a step decode together; their prompts share a batch.
    generation = training.batch_seconds + policy.max_completion_length * training.step_seconds
    update = training.update_seconds * grpo.gradient_accumulation_steps
    step, steps = generation + update, config.optim.max_steps
    # A batch of rows is ``rows // draws`` texts, each sampled ``draws`` times.
    per_text = (
        (evaluation.batch_seconds + settings.max_new_tokens * evaluation.step_seconds)
        * settings.draws
        / evaluation.rows
    )
    arithmetic = [
        f"Measured here ({config.run.model}): a batch of {training.rows} rows costs "
        f"{training.batch_seconds:.2f} s before decoding and {training.step_seconds:.3f} s a "
        f"decoding step; a forward + backward of {grpo.per_device_train_batch_size} rollouts "
        f"and an optimizer step {training.update_seconds:.2f} s; a batch of "
        f"{evaluation.rows} rows {evaluation.batch_seconds:.2f} s + "
        f"{evaluation.step_seconds:.3f} s a step.",
        f"A GRPO step: {training.rows} rows (rollouts and anchors) to "
        f"{policy.max_completion_length} tokens = {generation:.1f} s of sampling, plus "
        f"{grpo.gradient_accumulation_steps} micro-batch updates = {update:.1f} s: {step:.1f} s.",
        f"{steps} steps x {step:.1f} s = {steps * step / 60:.1f} min.",
        f"Evaluation: {settings.draws} draw(s) of {settings.max_new_tokens} tokens a text, "
        f"{evaluation.rows} rows a batch = {per_text:.2f} s a text.",
    ]
    return Estimate(steps * step / 60, per_text * 1000 / 60, arithmetic)
