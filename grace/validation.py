"""Validation during training: does the run learn, measured on data it never trains on.

Every method (GRACE supervised and unsupervised, +CL, SimCSE) is scored on the same small
review -> plot retrieval set every ``validation.every`` steps, with the live model:

* queries are reviews of the *training* movies that were held out of training
  (``movie_triples("validation")``), never the test movies of the offline suite;
* the pool holds their movies' plots and each triple's hard negative plot;
* GRACE models write a greedy rationale (no sampling noise), the contrastive baselines embed
  directly, each as it will be evaluated.

Two numbers per point, each with its standard error over queries: the mean reciprocal rank
of the right plot, and the mean margin cos(q, d+) - cos(q, d-), GRACE's training margin.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from transformers import PreTrainedTokenizerBase, Trainer, TrainerCallback

from grace.data import movie_triples, stable_fraction
from grace.encoder import EncoderConfig, GraceEncoder

METRICS = ("mrr", "margin")


@dataclass
class ValidationSet:
    """Queries, a pool of plots, and where each query's positive and hard negative sit."""

    queries: list[str]
    plots: list[str]
    positive: list[int]
    negative: list[int]


def validation_set(movies: int, reviews_per_movie: int) -> ValidationSet:
    """``reviews_per_movie`` validation reviews of each of ``movies`` training movies
    (picked by a stable hash, the same in every run)."""
    by_movie: dict[str, list[dict]] = {}
    for triple in movie_triples("validation"):
        by_movie.setdefault(triple["movie"], []).append(triple)
    eligible = [m for m, rows in by_movie.items() if len(rows) >= reviews_per_movie]
    chosen = sorted(eligible, key=lambda m: stable_fraction(m, "validation-movies"))[:movies]
    plots: dict[str, int] = {}
    queries, positive, negative = [], [], []
    for movie in sorted(chosen):
        rows = sorted(by_movie[movie], key=lambda t: stable_fraction(t["query"]))
        for triple in rows[:reviews_per_movie]:
            queries.append(triple["query"])
            positive.append(plots.setdefault(triple["positive"], len(plots)))
            negative.append(plots.setdefault(triple["negative"], len(plots)))
    return ValidationSet(queries, list(plots), positive, negative)


def mean_and_stderr(values: np.ndarray) -> tuple[float, float]:
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


def score(embed: Callable[[list[str]], np.ndarray], data: ValidationSet) -> dict[str, tuple]:
    """``{"mrr": (mean, stderr), "margin": (mean, stderr)}`` for unit-vector embeddings."""
    similarity = embed(data.queries) @ embed(data.plots).T
    rows = np.arange(len(data.queries))
    right = similarity[rows, data.positive]
    ranks = 1 + (similarity > right[:, None]).sum(axis=1)
    margins = right - similarity[rows, data.negative]
    return {"mrr": mean_and_stderr(1.0 / ranks), "margin": mean_and_stderr(margins)}


class ValidationCallback(TrainerCallback):
    """Scores the live model before training and every ``every`` steps; logs
    ``validation/<metric>`` and ``validation/<metric>_stderr`` into the run's history (and
    TensorBoard etc. when ``report_to`` asks)."""

    def __init__(
        self,
        trainer: Trainer,
        tokenizer: PreTrainedTokenizerBase,
        encoder_config: EncoderConfig,
        data: ValidationSet,
        every: int,
    ) -> None:
        self.trainer = trainer
        self.tokenizer = tokenizer
        self.encoder_config = encoder_config
        self.data = data
        self.every = every

    def measure(self, model) -> dict[str, float]:
        was_training = model.training
        model.eval()  # SimCSE trains with dropout; validation must not
        try:
            encoder = GraceEncoder(model, self.tokenizer, self.encoder_config)
            scores = score(lambda texts: encoder.encode(texts, show_progress_bar=False), self.data)
        finally:
            model.train(was_training)
        logs = {}
        for name, (value, stderr) in scores.items():
            logs[f"validation/{name}"] = value
            logs[f"validation/{name}_stderr"] = stderr
        return logs

    def log(self, model, control) -> None:
        # transformers' own log: trl's override would fold its pending step metrics into ours.
        # Logging clears ``should_log``, which the step's own logging still needs.
        should_log = control.should_log
        Trainer.log(self.trainer, self.measure(model))
        control.should_log = should_log

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == 0:
            self.log(model, control)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self.log(model, control)


def validation_callback(config, trainer: Trainer) -> ValidationCallback:
    """The callback for a run's ``TrainConfig``: greedy rationales of the training length for
    GRACE, direct embeddings for the contrastive baselines."""
    policy = config.policy
    encoder_config = EncoderConfig(
        mode="rationale" if config.run.method == "grace" else "direct",
        temperature=0.0,
        max_new_tokens=policy.max_completion_length,
        max_input_tokens=policy.max_prompt_tokens,
        system_prompt=policy.system_prompt,
        batch_size=config.evaluation.batch_size,
    )
    settings = config.validation
    data = validation_set(settings.movies, settings.reviews_per_movie)
    return ValidationCallback(
        trainer, trainer.processing_class, encoder_config, data, settings.every
    )


def validation_curve(history: list[dict], metric: str = "mrr") -> dict:
    """``{"steps", "values", "stderr", "metric"}`` from a run's logged history."""
    points = [h for h in history if f"validation/{metric}" in h]
    return {
        "steps": [h["step"] for h in points],
        "values": [h[f"validation/{metric}"] for h in points],
        "stderr": [h[f"validation/{metric}_stderr"] for h in points],
        "metric": f"validation {metric} (review -> plot, held-out reviews of training movies)",
    }


def rises(curve: dict, sigmas: float = 3.0) -> bool:
    """Whether the last point is above the first by more than ``sigmas`` combined errors."""
    gap = curve["values"][-1] - curve["values"][0]
    return gap > sigmas * math.hypot(curve["stderr"][-1], curve["stderr"][0])


def plot_curve(ax, curve: dict, label: str) -> None:
    """The curve with a band of one standard error on a matplotlib axis."""
    steps = np.array(curve["steps"])
    values, errors = np.array(curve["values"]), np.array(curve["stderr"])
    ax.plot(steps, values, marker="o", label=label)
    ax.fill_between(steps, values - errors, values + errors, alpha=0.2)


def export_curves(folders: dict[str, Path], target: Path) -> None:
    """``target/<run>.json`` (mrr curve) for each run folder that logged validation."""
    from grace.runs import log_history

    target.mkdir(parents=True, exist_ok=True)
    for name, folder in folders.items():
        curve = validation_curve(log_history(folder))
        if curve["steps"]:
            (target / f"{name}.json").write_text(json.dumps(curve, indent=1))


def describe(curve: dict, name: str) -> str:
    """One sentence on a validation curve, from its numbers: up, down, or within noise."""
    if len(curve["steps"]) < 2:
        return f"{name}: no validation curve was logged (set `validation.every`)."
    first, last = curve["values"][0], curve["values"][-1]
    start, end = curve["stderr"][0], curve["stderr"][-1]
    if rises(curve):
        verdict = "up by more than three combined standard errors: it learned"
    elif rises({"values": [-first, -last], "stderr": [start, end]}):
        verdict = "down by more than three combined standard errors: it got worse"
    else:
        verdict = "a change within three combined standard errors: no difference measured"
    return (
        f"{name}: validation MRR {first:.3f} ± {start:.3f} at step {curve['steps'][0]} → "
        f"{last:.3f} ± {end:.3f} at step {curve['steps'][-1]}, {verdict}."
    )


def describe_terms(history: list[dict], keys: tuple[str, ...], share: float = 0.25) -> str:
    """The logged reward terms, mean of the first quarter of the steps against the last."""
    logged = [h for h in history if all(k in h for k in keys)]
    if not logged:
        return "No reward terms were logged."
    size = max(1, int(len(logged) * share))
    head, tail = logged[:size], logged[-size:]

    def mean(part: list[dict], key: str) -> float:
        return sum(h[key] for h in part) / len(part)

    changes = ", ".join(
        f"{key.split('/')[-1]} {mean(head, key):.3f} → {mean(tail, key):.3f}" for key in keys
    )
    return f"Mean reward terms, first {size} against last {size} steps: {changes}."
