"""Validation during training: does the run learn, measured on data it never trains on.

Every method (GRACE supervised and unsupervised, +CL, SimCSE) is scored on the same small
review -> plot retrieval set every ``validation.every`` steps, with the live model:

* queries are reviews of the *training* movies that were held out of training
  (``movie_triples("validation")``), never the test movies of the offline suite;
* the pool holds their movies' plots and each triple's hard negative plot;
* GRACE models write a greedy rationale (no sampling noise), the contrastive baselines embed
  directly, each as it will be evaluated.

Two numbers per point, each with its standard error over queries: the mean reciprocal rank
of the right plot, and the mean margin cos(q, d+) - cos(q, d-), GRACE's training margin. Each
point also records how far training had got (``prompts_seen``, the training process's CPU
``seconds`` and wall seconds, validation itself left out) and collapse diagnostics of the
rationales and embeddings it wrote (``grace.diagnostics``).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase, Trainer, TrainerCallback

from grace.config import ConfigError
from grace.data import TASKS, movie_triples, rank_by_word_overlap, stable_fraction
from grace.decision import (
    HIGHER,
    LOWER,
    MATTERS,
    NO_DIFFERENCE,
    TOO_NOISY,
    Difference,
    paired,
)
from grace.diagnostics import collapse_diagnostics
from grace.encoder import EncoderConfig, GraceEncoder
from grace.files import appended_records
from grace.runs import saved_config

METRICS = ("mrr", "margin")


@dataclass
class ValidationSet:
    """Queries, a pool of plots, and where each query's positive and hard negative sit."""

    queries: list[str]
    plots: list[str]
    positive: list[int]
    negative: list[int]

    @property
    def clusters(self) -> list[int]:
        """The cluster of each query for standard errors, its movie (or article), named by
        its document."""
        return self.positive


def validation_set(
    movies: int | None,
    reviews_per_movie: int,
    task: str = "review-plot",
    split: str = "validation",
) -> ValidationSet:
    """``reviews_per_movie`` validation reviews of each of ``movies`` training movies that have
    that many, or (``movies=None``) up to ``reviews_per_movie`` of every training movie with a
    validation review; picked by a stable hash, the same in every run. Another retrieval
    ``task`` of ``grace.data.TASKS`` gives its held-out queries and documents instead (the
    hard negative of each: the document sharing the most words with its own), or with
    ``split="test"`` its test queries, to be read once."""
    if split not in ("validation", "test"):
        raise ValueError(f"split is validation or test, not {split!r}")
    if task != "review-plot":
        built = TASKS[task]()
        rows = built.held_out if split == "validation" else built.test
        if not rows:
            raise ConfigError(f"The {task} task has no {split} queries.")
        nearest = rank_by_word_overlap(built.documents)
        targets = [target for _, target, _ in rows]
        return ValidationSet(
            [query for query, _, _ in rows],
            built.documents,
            targets,
            [nearest[target][0] for target in targets],
        )
    if split == "test":
        raise ConfigError("review-plot's test is the offline suite's held-out movies (grace eval).")
    by_movie: dict[str, list[dict]] = {}
    for triple in movie_triples("validation"):
        by_movie.setdefault(triple["movie"], []).append(triple)
    eligible = [
        movie
        for movie, rows in by_movie.items()
        if movies is None or len(rows) >= reviews_per_movie
    ]
    if not eligible:
        most = max(len(rows) for rows in by_movie.values())
        raise ConfigError(
            f"validation.reviews_per_movie={reviews_per_movie}: no training movie has that many "
            f"validation reviews (the most is {most}); lower it."
        )
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


def run_validation_set(settings, split: str = "validation") -> ValidationSet:
    """``validation_set`` as a run's ``ValidationConfig`` (``config.validation``) names it."""
    return validation_set(settings.movies, settings.reviews_per_movie, settings.task, split)


def mean_and_stderr(values: np.ndarray) -> tuple[float, float]:
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


def clustered_stderr(
    values: np.ndarray, clusters: list[int] | np.ndarray, draws: int = 2000, seed: int = 0
) -> float:
    """Standard error of ``values.mean()`` bootstrapped over clusters (whole clusters drawn
    with replacement): the queries of one movie share its plot, so they are not independent
    and the plain standard error understates the noise."""
    values = np.asarray(values, dtype=float)
    _, cluster = np.unique(np.asarray(clusters), return_inverse=True)
    sums = np.bincount(cluster, weights=values)
    counts = np.bincount(cluster).astype(float)
    picks = np.random.default_rng(seed).integers(0, len(sums), size=(draws, len(sums)))
    return float((sums[picks].sum(axis=1) / counts[picks].sum(axis=1)).std(ddof=1))


def per_query(embed: Callable[[list[str]], np.ndarray], data: ValidationSet) -> dict:
    """Per query: reciprocal rank of its plot (``mrr``) and cos(q, d+) - cos(q, d-)."""
    return query_scores(embed(data.queries), embed(data.plots), data)


def query_scores(queries: np.ndarray, plots: np.ndarray, data: ValidationSet) -> dict:
    """``per_query`` from the embeddings of ``data.queries`` and ``data.plots``."""
    similarity = queries @ plots.T
    rows = np.arange(len(data.queries))
    right = similarity[rows, data.positive]
    ranks = pessimistic_ranks(similarity, right)
    return {"mrr": 1.0 / ranks, "margin": right - similarity[rows, data.negative]}


def pessimistic_ranks(similarity: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Rank (1 = first) of each row's right candidate, whose similarity ``right`` is among the
    row's: every candidate not strictly below it counts as ahead, so ties, NaN (diverged
    weights) and identical embeddings rank it last, never first."""
    return np.maximum(1, (~(similarity < right[..., None])).sum(axis=-1))


def score(embed: Callable[[list[str]], np.ndarray], data: ValidationSet) -> dict[str, tuple]:
    """``{"mrr": (mean, stderr), "margin": (mean, stderr)}`` for unit-vector embeddings."""
    return {name: mean_and_stderr(values) for name, values in per_query(embed, data).items()}


DETAILS = "validation.jsonl"  # per-query values of every point, in the run folder
BUDGET = "grace_budget.json"  # training seconds spent up to a checkpoint, in the checkpoint


def stable_hash(texts: list[str]) -> str:
    """A short hash of a list of texts: which validation set a record was measured on."""
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]


class ValidationCallback(TrainerCallback):
    """Scores the live model before training and every ``every`` steps.

    Logs ``validation/<metric>`` with its standard error over queries, and
    ``validation/<metric>_change`` against step 0 with the standard error of the *paired*
    differences (the same queries at both points, so how hard each query is cancels out and
    far smaller changes can be told from noise). Per-query values, the training budget spent
    so far and the collapse diagnostics go to ``validation.jsonl`` in the run folder, which
    also keeps the step-0 values (and the seconds spent) for a resumed run.
    """

    def __init__(
        self,
        trainer: Trainer,
        tokenizer: PreTrainedTokenizerBase,
        encoder_config: EncoderConfig,
        data: ValidationSet,
        every: int,
        prompts_per_step: int = 0,
    ) -> None:
        self.trainer = trainer
        self.tokenizer = tokenizer
        self.encoder_config = encoder_config
        self.data = data
        self.every = every
        self.prompts_per_step = prompts_per_step
        self.details = Path(trainer.args.output_dir) / DETAILS
        self.baseline = None
        self.spent = {"seconds": 0.0, "wall_seconds": 0.0}  # before this process (resumed)
        self.clock = None  # (cpu, wall) when this process began training, less validation
        self.queries = stable_hash(data.queries + data.plots)
        greedy = encoder_config.mode != "rationale" or encoder_config.temperature == 0
        self.draws = 0 if greedy else encoder_config.num_rationales  # 0: greedy (or direct)
        points = appended_records(self.details, repair=True) if self.details.exists() else []
        if points:
            first = points[0]
            if (
                first.get("queries", self.queries) != self.queries
                or len(first["mrr"]) != len(data.queries)
                or first.get("draws", 0) != self.draws
            ):
                raise ConfigError(
                    f"{self.details} was measured on another validation set or with other "
                    "rationales (the validation settings changed since); resuming would compare "
                    "different measurements. Delete it to validate this run from its resume "
                    "step on, or restore the settings."
                )
            self.baseline = {name: np.array(first[name]) for name in METRICS}

    def budget(self) -> dict[str, float]:
        """Training seconds so far (CPU time of this process, all its threads, and wall time),
        validation excluded, resumed runs included."""
        if self.clock is None:
            return dict(self.spent)
        cpu, wall = self.clock
        return {
            "seconds": round(self.spent["seconds"] + time.process_time() - cpu, 2),
            "wall_seconds": round(self.spent["wall_seconds"] + time.perf_counter() - wall, 2),
        }

    def measure(self, model, step: int) -> dict[str, float]:
        budget = self.budget()
        started = time.process_time(), time.perf_counter()
        was_training = model.training
        model.eval()  # SimCSE trains with dropout; validation must not
        try:
            encoder = GraceEncoder(model, self.tokenizer, self.encoder_config)
            texts = self.data.queries + self.data.plots
            embeddings, rationales = encoder.encode_with_rationales(texts, show_progress_bar=False)
        finally:
            model.train(was_training)
        count = len(self.data.queries)
        values = query_scores(embeddings[:count], embeddings[count:], self.data)
        written = rationales if self.encoder_config.mode == "rationale" else None
        diagnostics = collapse_diagnostics(texts, written, embeddings)
        self.baseline = self.baseline or values
        record = {
            "step": step,
            "queries": self.queries,
            "draws": self.draws,
            "clusters": self.data.clusters,
            "prompts_seen": step * self.prompts_per_step,
            **budget,
            "diagnostics": diagnostics,
            **{k: v.tolist() for k, v in values.items()},
        }
        with open(self.details, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        logs = {}
        for name, value in values.items():
            logs[f"validation/{name}"], logs[f"validation/{name}_stderr"] = mean_and_stderr(value)
            change = mean_and_stderr(value - self.baseline[name])
            logs[f"validation/{name}_change"], logs[f"validation/{name}_change_stderr"] = change
            clustered = clustered_stderr(value - self.baseline[name], self.data.clusters)
            logs[f"validation/{name}_change_stderr_clustered"] = clustered
        logs |= {f"validation/{k}": v for k, v in diagnostics.items() if v is not None}
        if self.clock is not None:  # validation's own time is not training time
            cpu, wall = self.clock
            self.clock = (
                cpu + time.process_time() - started[0],
                wall + time.perf_counter() - started[1],
            )
        return logs

    def log(self, model, state, control) -> None:
        # transformers' own log: trl's override would fold its pending step metrics into ours.
        # Logging clears ``should_log``, which the step's own logging still needs.
        should_log = control.should_log
        Trainer.log(self.trainer, self.measure(model, state.global_step))
        control.should_log = should_log

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero:  # one process validates for a multi-process job
            return
        if state.global_step == 0:
            self.log(model, state, control)
        else:  # resumed: the budget spent up to the checkpoint it resumes from
            saved = Path(args.output_dir) / f"checkpoint-{state.global_step}" / BUDGET
            if saved.exists():
                self.spent = json.loads(saved.read_text())
            elif self.details.exists():  # a checkpoint written before budgets were saved
                points = appended_records(self.details)
                before = [p for p in points if p["step"] <= state.global_step and "seconds" in p]
                if before:
                    self.spent = {key: before[-1][key] for key in self.spent}
        self.clock = time.process_time(), time.perf_counter()

    def on_save(self, args, state, control, **kwargs):
        """The budget goes into each checkpoint, so a resumed run counts from there."""
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            (folder / BUDGET).write_text(json.dumps(self.budget()))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero:
            return
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self.log(model, state, control)


def validation_encoder(config) -> EncoderConfig:
    """How a run is validated: rationales of the training length for GRACE (greedy, or with
    ``validation.draws`` k the mean of k sampled at the policy's temperature), direct
    embeddings for the contrastive baselines, as each is evaluated."""
    policy, draws = config.policy, config.validation.draws
    return EncoderConfig(
        mode="rationale" if config.run.method == "grace" else "direct",
        temperature=policy.temperature if draws else 0.0,
        num_rationales=max(draws, 1),
        max_new_tokens=policy.max_completion_length,
        max_input_tokens=policy.max_prompt_tokens,
        system_prompt=policy.system_prompt,
        batch_size=config.evaluation.batch_size,
    )


def prompts_per_step(config) -> int:
    """Training texts one optimizer step learns from: GRPO prompts (each with its group of
    rollouts), or the contrastive baselines' pairs or sentences."""
    if config.run.method != "grace":
        return config.baselines.batch_size
    grpo = config.grpo
    completions = grpo.per_device_train_batch_size * grpo.gradient_accumulation_steps
    return completions // config.policy.num_generations


def validation_callback(config, trainer: Trainer) -> ValidationCallback:
    """The callback for a run's ``TrainConfig``."""
    settings = config.validation
    data = run_validation_set(settings)
    return ValidationCallback(
        trainer,
        trainer.processing_class,
        validation_encoder(config),
        data,
        settings.every,
        prompts_per_step(config) * trainer.accelerator.num_processes,
    )


def paired_change(
    config, before: str, after: str, metric: str = "mrr", after_changes: dict | None = None
) -> dict:
    """Validate two saved models (e.g. the base model and a run folder) on the same queries,
    each as the run validates it (``after_changes``: encoder settings changed for ``after``,
    e.g. ``{"mode": "echo"}``): their scores and the paired change, each with its standard
    error."""
    data = run_validation_set(config.validation)
    settings = vars(validation_encoder(config))
    sides = (("before", before, settings), ("after", after, settings | (after_changes or {})))
    values = {}
    for name, model, encoder_settings in sides:
        encode = GraceEncoder.from_pretrained(model, **encoder_settings).encode
        values[name] = per_query(lambda t, e=encode: e(t, show_progress_bar=False), data)[metric]
    return {
        "queries": len(data.queries),
        "before": mean_and_stderr(values["before"]),
        "after": mean_and_stderr(values["after"]),
        "change": mean_and_stderr(values["after"] - values["before"]),
        "change_stderr_clustered": clustered_stderr(
            values["after"] - values["before"], data.clusters
        ),
    }


def validation_curve(history: list[dict], metric: str = "mrr") -> dict:
    """``{"steps", "values", "stderr", "change", "change_stderr", "metric"}`` from a run's
    logged history (``change``: paired difference from step 0)."""
    key = f"validation/{metric}"
    points = [h for h in history if key in h]
    return {
        "steps": [h["step"] for h in points],
        "values": [h[key] for h in points],
        "stderr": [h[f"{key}_stderr"] for h in points],
        "change": [h.get(f"{key}_change") for h in points],
        "change_stderr": [h.get(f"{key}_change_stderr") for h in points],
        "metric": f"validation {metric} (review -> plot, held-out reviews of training movies)",
    }


def details_curve(folder: str | Path, metric: str = "mrr") -> dict:
    """``validation_curve``'s dict from a run folder's per-query file (``validation.jsonl``),
    so a run that was stopped before it wrote its history still has a curve."""
    # A resumed run measures its resume step again: the last record of a step counts.
    records = {point["step"]: point for point in appended_records(Path(folder) / DETAILS)}
    steps = sorted(records)
    by_step = {step: np.array(records[step][metric]) for step in steps}
    first = by_step[steps[0]]
    points = [mean_and_stderr(by_step[step]) for step in steps]
    changes = [mean_and_stderr(by_step[step] - first) for step in steps]
    curve = {
        "steps": steps,
        "values": [value for value, _ in points],
        "stderr": [error for _, error in points],
        "change": [change for change, _ in changes],
        "change_stderr": [error for _, error in changes],
        "metric": validation_curve([], metric)["metric"],
        "queries": len(first),
    }
    for key in ("prompts_seen", "seconds", "wall_seconds", "diagnostics"):
        if all(key in records[step] for step in steps):  # runs before 2026-11-30 lack them
            curve[key] = [records[step][key] for step in steps]
    clusters = records[steps[0]].get("clusters")  # runs before 2026-12-03 lack them
    if clusters is not None:
        curve["change_stderr_clustered"] = [
            clustered_stderr(by_step[step] - first, clusters) for step in steps
        ]
    return curve


def change_error(curve: dict) -> float:
    """The last point's standard error of the paired change: bootstrapped over movies where
    the record has it, else over queries (records before the clusters were kept); 0 if none."""
    errors = curve.get("change_stderr_clustered") or curve.get("change_stderr") or [0]
    return errors[-1] or 0


def curve_change(curve: dict, sigmas: float = 3.0) -> Difference:
    """The last point against the first, as the decision rule reads it (``grace.decision.paired``):
    the paired change against ``sigmas`` of its standard errors where it was logged
    (``change_error``), else the gap against the two points' errors combined."""
    change, error = (curve.get("change") or [None])[-1], change_error(curve)
    if change is not None and error:
        return paired(change, error, sigmas)
    gap = curve["values"][-1] - curve["values"][0]
    return paired(gap, math.hypot(curve["stderr"][-1], curve["stderr"][0]), sigmas)


def plot_curve(ax, curve: dict, label: str) -> None:
    """The curve with a band of one standard error on a matplotlib axis."""
    steps = np.array(curve["steps"])
    values, errors = np.array(curve["values"]), np.array(curve["stderr"])
    ax.plot(steps, values, marker="o", label=label)
    ax.fill_between(steps, values - errors, values + errors, alpha=0.2)


def export_curves(folders: dict[str, Path], target: Path) -> None:
    """``target/<run>.json`` (mrr curve) for each finished run folder that logged validation;
    folders not (yet) trained are left out."""
    from grace.runs import HISTORY_FILE, log_history

    target.mkdir(parents=True, exist_ok=True)
    for name, folder in folders.items():
        if not (Path(folder) / HISTORY_FILE).exists():
            continue
        curve = validation_curve(log_history(folder))
        if curve["steps"]:
            (target / f"{name}.json").write_text(json.dumps(curve, indent=1))


def describe(curve: dict, name: str) -> str:
    """One sentence on a validation curve, from its numbers: up, down, or within noise."""
    if len(curve["steps"]) < 2:
        return f"{name}: no validation curve was logged (set `validation.every`)."
    first, last = curve["values"][0], curve["values"][-1]
    start, end = curve["stderr"][0], curve["stderr"][-1]
    change, error = (curve.get("change") or [None])[-1], change_error(curve)
    paired = change is not None and error
    clustered = " (clustered)" if curve.get("change_stderr_clustered") else ""
    noise = (
        f"standard errors{clustered} of the paired change" if paired else "combined standard errors"
    )
    words = {
        HIGHER: f"up by more than three {noise}: it learned",
        LOWER: f"down by more than three {noise}: it got worse",
        NO_DIFFERENCE: f"within three {noise}, a band narrower than a change that would "
        f"matter ({MATTERS / 100:g} MRR): no measured difference",
        TOO_NOISY: f"within three {noise}, a band wider than a change that would matter "
        f"({MATTERS / 100:g} MRR): too noisy to tell",
    }
    verdict = words[curve_change(curve).verdict]
    detail = f" (change {change:+.3f} ± {error:.3f}, same queries)" if paired else ""
    return (
        f"{name}: validation MRR {first:.3f} ± {start:.3f} at step {curve['steps'][0]} → "
        f"{last:.3f} ± {end:.3f} at step {curve['steps'][-1]}{detail}, {verdict}."
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


def verdict(curve: dict) -> str:
    """The decision rule's verdict on the curve's last point against step 0."""
    return curve_change(curve).verdict


def read_sweep(folder: str | Path) -> list[dict]:
    """The records ``scripts/sweep.py`` wrote (one JSON per variant), by name."""
    return [json.loads(path.read_text()) for path in sorted(Path(folder).glob("*.json"))]


def tuning_sweep(folder: str | Path) -> list[dict]:
    """The records of the ``cpu`` profile's tuning sweep (48 validation queries): those of the
    study (``study-*``, 268 queries) and of other tasks (``task-*``) are the study chapter's."""
    return [r for r in read_sweep(folder) if not r["variant"].startswith(("study-", "task-"))]


def describe_sweep(records: list[dict]) -> str:
    """How many sweep records rose on validation, judged from each curve (``verdict``)."""
    if not records:
        return "No validation sweep recorded."
    learned = [r["variant"] for r in records if verdict(r["curve"]) == HIGHER]
    return (
        f"{len(learned)} of {len(records)} recorded variants rose on validation by more than "
        f"three standard errors of the paired change ({', '.join(learned) or 'none'})."
    )


def sweep_table(records: list[dict]):
    """One row per sweep variant: what it changed, its validation curve's ends and verdict."""
    import pandas as pd

    rows = []
    for entry in records:
        curve, seconds = entry["curve"], entry.get("median_step_seconds")
        stopped = "" if entry.get("finished", True) else " (stopped)"
        rows.append(  # strings, so that a markdown table shows them as written here
            {
                "variant": entry["variant"],
                "changes": ", ".join(f"{k}={v}" for k, v in entry["overrides"].items())
                or "the profile",
                "steps": f"{curve['steps'][-1]}{stopped}",
                "MRR at step 0": f"{curve['values'][0]:.3f}",
                "MRR at the end": f"{curve['values'][-1]:.3f}",
                "paired change": f"{curve['change'][-1]:+.3f} ± {curve['change_stderr'][-1]:.3f}",
                "verdict": verdict(curve),
                "s / step": "" if seconds is None else f"{seconds:.1f}",
            }
        )
    return pd.DataFrame(rows).set_index("variant")


def swap_test(
    base: GraceEncoder, trained: GraceEncoder, data: ValidationSet, show_progress: bool = True
) -> dict:
    """Writer or weights? Each model writes its rationales (greedy, as validation runs) and
    each embeds both models' rationales: the 2 x 2 cells, plus each model's direct and echo
    rows, scored on ``data`` and paired per query with the base model writing and embedding.

    A change that follows the writer comes from what the policy writes; one that follows the
    embedder comes from how its weights encode. ``trained`` may be any model of the base's
    tokenizer (a GRACE run or +CL)."""
    texts = data.queries + data.plots
    count = len(data.queries)
    models = {"base": base, "trained": trained}
    # Two writing passes and six embedding passes over every text: minutes on a CPU.
    progress = tqdm(total=8, desc="swap test passes", disable=not show_progress)
    written = {}
    for name, model in models.items():
        written[name] = model.write(texts)
        progress.update()
    cap = base.config.max_new_tokens
    echo = [base.echo_ids(text, cap) for text in texts]
    values = {}
    for embedder, model in models.items():
        cells = {f"{writer} writes, {embedder} embeds": ids for writer, ids in written.items()}
        cells |= {f"{embedder}, direct": [[] for _ in texts], f"{embedder}, echo": echo}
        for cell, completions in cells.items():
            values[cell] = model.embed_written(texts, completions)
            progress.update()
    progress.close()
    mrr = {
        name: query_scores(vectors[:count], vectors[count:], data)["mrr"]
        for name, vectors in values.items()
    }
    reference = mrr["base writes, base embeds"]
    rows = {}
    for name, scores in mrr.items():
        change = scores - reference
        rows[name] = {
            "mrr": mean_and_stderr(scores),
            "change": float(change.mean()),
            "change_stderr_clustered": clustered_stderr(change, data.clusters),
        }
    return {"queries": count, "clusters": len(set(data.clusters)), "rows": rows}


def run_swap_test(folder: str | Path, split: str = "validation") -> dict:
    """``swap_test`` of a run folder against the base model it was trained from, on the run's
    validation queries (or its task's test queries, read once). Both write greedy rationales
    of the training length, a contrastive baseline too (it is validated direct, but the
    question is what a rationale does)."""
    config = saved_config(folder)
    held = config.validation
    data = run_validation_set(held, split)
    settings = vars(validation_encoder(config)) | {"mode": "rationale"}
    base = GraceEncoder.from_pretrained(config.run.model, **settings)
    trained = GraceEncoder.from_pretrained(str(folder), **settings)
    return swap_test(base, trained, data) | {
        "task": held.task,
        "split": split,
        "method": config.run.method,
    }
