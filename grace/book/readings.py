"""What a notebook's run shows, in sentences generated from its numbers.

Each notebook of the book ends with a verdict computed from the run it just made, never typed
in, and read by the book's one decision rule (``grace.decision``): a change is called only
beyond its noise, and one inside a band wider than a change that would matter is "too noisy
to tell". Helpers for the evaluation tables live in ``grace.evaluation.results``; the ones here
serve the notebooks on the idea (1), generation (2), pooling (3), rewards (4), reading the
rationales (9) and the length and generation checks (10).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy.stats import t

from grace.decision import (
    HIGHER,
    LOWER,
    NO_DIFFERENCE,
    PHRASES,
    TOO_NOISY,
    Difference,
    paired_from,
)
from grace.diagnostics import first_to_last


def mean_and_noise(values: np.ndarray) -> tuple[float, float]:
    """Mean of ``values`` and the half-width of its 95 % t-interval (NaN for fewer than two
    values: no noise estimate)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float(values.mean()) if len(values) else math.nan, math.nan
    half = t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return float(values.mean()), float(half)


def pair_margin(similarity: np.ndarray, related: list[tuple[int, int]]) -> tuple[float, float]:
    """Mean cosine of the ``related`` pairs minus that of every other pair (i < j), and the
    half-width of its 95 % band: Welch's standard error times the t quantile of the smaller
    side's degrees of freedom (conservative for a handful of pairs; NaN with fewer than two
    pairs on either side)."""
    size = similarity.shape[0]
    wanted = {tuple(sorted(pair)) for pair in related}
    pairs = [(i, j) for i in range(size) for j in range(i + 1, size)]
    close = np.array([similarity[p] for p in pairs if p in wanted])
    other = np.array([similarity[p] for p in pairs if p not in wanted])
    if len(close) < 2 or len(other) < 2:
        return float(close.mean() - other.mean()), math.nan
    error = math.sqrt(close.var(ddof=1) / len(close) + other.var(ddof=1) / len(other))
    quantile = t.ppf(0.975, min(len(close), len(other)) - 1)
    return float(close.mean() - other.mean()), float(quantile * error)


def describe_separation(
    similarities: Mapping[str, np.ndarray], related: list[tuple[int, int]]
) -> str:
    """How far each embedding mode puts related pairs above unrelated ones, and whether the
    modes differ beyond the noise of so few pairs (notebook 1).

    ``similarities``: mode name -> cosine matrix of the same texts; ``related``: index pairs.
    """
    margins = {name: pair_margin(matrix, related) for name, matrix in similarities.items()}
    parts = [f"{name}: {m:+.3f} ± {e:.3f}" for name, (m, e) in margins.items()]
    text = (
        "Mean cosine of related pairs minus that of unrelated pairs (± 95 % band over pairs): "
        + "; ".join(parts)
        + "."
    )
    if len(margins) == 2:
        (first, (m1, e1)), (second, (m2, e2)) = margins.items()
        change = Difference.fraction(m2 - m1, math.hypot(e1, e2))
        size = similarities[first].shape[0]
        if math.isnan(change.noise) or change.verdict == TOO_NOISY:
            text += (
                f" {second.capitalize()} against {first}: {change}, too noisy to tell with "
                f"{len(related)} related pairs; {size} sentences illustrate the idea but "
                "cannot measure it."
            )
        elif change.verdict == NO_DIFFERENCE:
            text += f" {second.capitalize()} against {first}: {change}, {PHRASES[NO_DIFFERENCE]}."
        else:
            way = "wider" if change.verdict == HIGHER else "narrower"
            text += (
                f" {second.capitalize()} against {first}: {change}, a {way} margin beyond the "
                f"noise of {len(related)} related pairs."
            )
    return text


THINK_TAG = "<think>"


def describe_rollouts(table: pd.DataFrame, cap: int, train_temperature: float) -> str:
    """Rationale lengths, cap hits and ``<think>`` tags per temperature (notebook 2).

    ``table``: one row per rollout with ``temperature``, ``tokens``, ``hit_cap`` and
    ``rationale``; ``cap``: the token limit; ``train_temperature``: the policy's.
    """
    parts = []
    for temperature, group in table.groupby("temperature"):
        parts.append(
            f"temperature {temperature:g}: {len(group)} rationales of {group['tokens'].mean():.1f} "
            f"tokens on average, {int(group['hit_cap'].sum())} of {len(group)} stopped by the "
            f"cap of {cap}"
        )
    text = "; ".join(parts)
    text = text[:1].upper() + text[1:] + "."
    trained = table[table["temperature"] == train_temperature]
    if len(trained):
        share = trained["hit_cap"].mean()
        text += (
            f" At the training temperature ({train_temperature:g}) {share:.0%} of the rollouts "
            f"hit this cap of {cap} tokens: under the paper's length penalty each of them would "
            "get a reward of -1, whatever it says."
        )
    tagged = int(table["rationale"].str.contains(THINK_TAG, regex=False).sum())
    text += f" {tagged} of {len(table)} rationales open a `{THINK_TAG}` tag."
    return text


def describe_pooling(
    single: np.ndarray, second: np.ndarray, mean: np.ndarray, last: np.ndarray,
    tolerance: float = 1e-4,
) -> str:  # fmt: skip
    """Whether the single-pass embedding equals a second forward pass (within ``tolerance`` of
    cosine 1), and how far last-token pooling is from mean pooling (notebook 3). Arguments are
    (N, H) unit vectors of the same N texts."""
    same = np.sum(np.asarray(single) * np.asarray(second), axis=-1)
    other = np.sum(np.asarray(mean) * np.asarray(last), axis=-1)
    gap = float(np.max(1 - same))
    verdict = (
        f"within {tolerance:g} of 1: the same embedding up to float rounding"
        if gap <= tolerance
        else f"further than {tolerance:g} from 1: the two passes do NOT agree"
    )
    return (
        f"Single pass against a second forward pass: cosine {float(same.min()):.6f} at worst "
        f"over {len(same)} texts, {verdict}. Mean against last-token pooling: cosine "
        f"{float(other.min()):.3f} to {float(other.max()):.3f}, a different embedding."
    )


def describe_cancellation(
    terms: Mapping[str, np.ndarray], full: np.ndarray, without: np.ndarray,
    tolerance: float = 1e-5,
) -> str:  # fmt: skip
    """How much each reward term varies inside a group, and how far the advantages move when
    the terms that are constant per group are dropped (notebook 4).

    ``terms``: term name -> (G, n) values; ``full``/``without``: (G, n) advantages with all
    terms and without the group-constant ones.
    """
    spread = {
        name: float(np.max(np.ptp(np.asarray(values, dtype=float), axis=1)))
        for name, values in terms.items()
    }
    largest = float(np.max(np.abs(np.asarray(full) - np.asarray(without))))
    parts = ", ".join(f"{name} {value:.2g}" for name, value in spread.items())
    constant = [name for name, value in spread.items() if value <= tolerance]
    verdict = (
        "within float rounding, so they steer nothing"
        if largest <= tolerance
        else "beyond float rounding: some dropped term varies inside a group and DOES steer"
    )
    text = (
        f"Largest spread of each term inside a group: {parts}. Constant within every group: "
        f"{', '.join(constant) or 'none'}. Dropping the negative and cross-group terms moves "
        f"the advantages by at most {largest:.2g} (tolerance {tolerance:g}), {verdict}."
    )
    if len(constant) == len(spread):
        text += (
            " Here every term is constant within its group, so every advantage is zero: the "
            "rollouts of a group are too alike for this batch to teach anything."
        )
    return text


def describe_step(step: pd.DataFrame, tolerance: float = 1e-6) -> str:
    """One GRPO step read off its table (notebook 4): columns ``group``, ``advantage`` and
    ``change`` (the log-probability of each rollout after the step minus before)."""
    moved = step[step["advantage"].abs() > tolerance]
    if moved.empty:
        return "Every advantage is zero: the batch gives no gradient and the step changes nothing."
    agree = int((np.sign(moved["advantage"]) == np.sign(moved["change"])).sum())
    lines = [
        f"{agree} of {len(moved)} rollouts with a non-zero advantage moved the way their "
        "advantage points (up when positive, down when negative)."
    ]
    for group, rows in step.groupby("group"):
        best, worst = rows.loc[rows["advantage"].idxmax()], rows.loc[rows["advantage"].idxmin()]
        lines.append(
            f"Group {group}: the best rollout (advantage {best['advantage']:+.2f}) changed its "
            f"log-probability by {best['change']:+.3f}, the worst ({worst['advantage']:+.2f}) by "
            f"{worst['change']:+.3f}."
        )
    if agree < len(moved):
        lines.append(
            "Not every rollout follows its own advantage: the rollouts share weights, so "
            "pushing one up moves the others too (most when they share many tokens), and "
            "Adam's first step moves every weight by about the learning rate whatever the "
            "gradient's size."
        )
    return " ".join(lines)


def describe_collapse(rows: list[dict], share: float = 0.5) -> str:
    """The logged rollouts' collapse diagnostics (``diagnostics.logged_rollout_diagnostics``),
    first logged step against the last, and which collapse, if any, the last step shows."""
    if not rows:
        return "No rollouts were logged (set `logging.sample_every`)."
    first, last = rows[0], rows[-1]
    pair = (first, last)
    text = (
        f"Logged rollouts, step {first['step']} → step {last['step']}: copies of the input "
        f"{first_to_last(pair, 'copy_share', '.0%')}, code fences "
        f"{first_to_last(pair, 'fence_share', '.0%')}, distinct-2 "
        f"{first_to_last(pair, 'distinct_2', '.2f')}."
    )
    found = [
        name
        for name, key in (("copying the input", "copy_share"), ("code fences", "fence_share"))
        if last[key] >= share
    ]
    if found:
        text += f" At the last logged step most rollouts are {' and '.join(found)}."
    elif last["distinct_2"] is not None and last["distinct_2"] < 0.3:
        text += " At the last logged step the rollouts repeat one another (one template)."
    else:
        text += " No collapse is visible at the last logged step."
    return text


def describe_loss(history: list[dict], key: str = "loss", at: int = 10) -> str:
    """A training loss at its first logged step, at step ``at`` and at the end."""
    logged = [(h["step"], h[key]) for h in history if key in h]
    if not logged:
        return f"No {key} was logged."
    near = min(logged, key=lambda point: abs(point[0] - at))
    points = [logged[0], near, logged[-1]]
    return ", ".join(f"{value:.3f} at step {step}" for step, value in points) + "."


def describe_margins(margins: Mapping[str, np.ndarray]) -> str:
    """cos(query, positive) - cos(query, negative) per model over the same triples, and the
    paired change between the first two models (notebook 9)."""
    parts = []
    for name, values in margins.items():
        mean, noise = mean_and_noise(values)
        wins = int((np.asarray(values) > 0).sum())
        parts.append(
            f"{name}: {mean:+.3f} ± {noise:.3f}, positive plot closer in {wins} of {len(values)}"
        )
    text = "Margin cos(query, positive) - cos(query, negative) (± 95 % band): " + "; ".join(parts)
    names = list(margins)
    if len(names) < 2:
        return text + "."
    before, after = (np.asarray(margins[n], dtype=float) for n in names[:2])
    change = paired_from(after - before)
    shown = f"{change.value:+.3f} ± {change.noise:.3f} (three standard errors, paired)"
    if math.isnan(change.noise) or change.verdict in (NO_DIFFERENCE, TOO_NOISY):
        word = TOO_NOISY if math.isnan(change.noise) else change.verdict
        text += f". {names[1]} against {names[0]}: {shown}, {PHRASES[word]}."
    else:
        way = "wider" if change.verdict == HIGHER else "narrower"
        text += f". {names[1]} against {names[0]}: {shown}, a {way} margin beyond the noise."
    return text


def describe_generative(results: Mapping[str, dict], reference: str = "base") -> str:
    """Perplexity and instructions passed of each model against ``reference`` (notebook 10).

    ``results``: model -> ``grace.evaluation.generative.generative_check`` output. The change
    in instructions passed is paired by instruction; perplexity keeps no per-document values,
    so its change is given without a noise band.
    """
    base = results[reference]
    passed = np.array([r["passed"] for r in base["replies"]], dtype=float)
    parts = []
    for name, result in results.items():
        if name == reference:
            continue
        ratio = result["perplexity"] / base["perplexity"]
        mine = np.array([r["passed"] for r in result["replies"]], dtype=float)
        change = paired_from(mine - passed)
        if math.isnan(change.noise):
            verdict = "too few instructions to compare"
        elif change.noise == 0 and change.value == 0:
            verdict = "the same instructions pass and fail"
        else:
            verdict = {
                HIGHER: "more than before, beyond the noise",
                LOWER: "fewer than before, beyond the noise",
                NO_DIFFERENCE: PHRASES[NO_DIFFERENCE],
                TOO_NOISY: PHRASES[TOO_NOISY],
            }[change.verdict]
        parts.append(
            f"{name}: perplexity x{ratio:.2f}, instructions passed {int(mine.sum())} of "
            f"{len(mine)} ({verdict})"
        )
    return (
        f"Against {reference} (perplexity {base['perplexity']:.1f}, {int(passed.sum())} of "
        f"{len(passed)} instructions passed): " + "; ".join(parts) + "."
    )
