"""Collapse diagnostics: signs that a policy's rationales, or its embeddings, stop saying much.

GRPO with a similarity reward can find degenerate optima: every rollout one template (low
distinct-2), rollouts that repeat their input (copies), rollouts of bare code fences, or
embeddings that crowd into one direction (a high mean pairwise cosine). Each is measured on the
rationales and embeddings a validation point has anyway, so a curve shows when a run collapses.
"""

from __future__ import annotations

import json
from difflib import SequenceMatcher
from pathlib import Path

import numpy as np

COPY_SHARE = 0.8  # a rationale whose longest run shared with its input is >= 80 % of it
FENCE = "```"
COMPARED = 1000  # characters of a rationale compared with its input


def distinct_n(texts: list[str], n: int = 2) -> float | None:
    """Distinct word n-grams over all n-grams of ``texts`` (1.0: no n-gram repeats; near 0: one
    template). None when the texts hold no n-gram."""
    grams = [
        tuple(words[i : i + n])
        for words in (text.lower().split() for text in texts)
        for i in range(len(words) - n + 1)
    ]
    return len(set(grams)) / len(grams) if grams else None


def copies_input(rationale: str, text: str, share: float = COPY_SHARE) -> bool:
    """Whether ``rationale`` mostly repeats ``text``: their longest common substring (in
    characters, case and spacing ignored) is at least ``share`` of the rationale. Long texts are
    cut (``COMPARED`` characters) so that a 2,048-token rationale stays a millisecond check."""
    a = " ".join(rationale.lower().split())[:COMPARED]
    b = " ".join(text.lower().split())[: 4 * COMPARED]
    if not a:
        return False
    match = SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b))
    return match.size >= share * len(a)


def mean_pairwise_cosine(embeddings: np.ndarray) -> float:
    """Mean cosine between distinct rows of unit vectors (1.0: every embedding the same)."""
    rows = len(embeddings)
    if rows < 2:
        raise ValueError("mean_pairwise_cosine needs at least two embeddings.")
    similarity = embeddings @ embeddings.T
    return float((similarity.sum() - np.trace(similarity)) / (rows * (rows - 1)))


def collapse_diagnostics(
    texts: list[str], rationales: list[str] | None, embeddings: np.ndarray
) -> dict:
    """The four numbers of a validation point; the rationale numbers are None in direct mode
    (``rationales=None``: nothing written)."""
    result = {
        "distinct_2": None,
        "copy_share": None,
        "fence_share": None,
        "mean_cosine": mean_pairwise_cosine(embeddings),
    }
    if rationales is not None:
        result |= rationale_diagnostics(texts, rationales)
    return result


def rationale_diagnostics(texts: list[str], rationales: list[str]) -> dict:
    """Distinct-2, copy share and fence share of rationales written for ``texts``."""
    pairs = list(zip(texts, rationales, strict=True))
    return {
        "distinct_2": distinct_n(rationales, 2),
        "copy_share": sum(copies_input(r, t) for t, r in pairs) / len(pairs),
        "fence_share": sum(FENCE in r for r in rationales) / len(pairs),
    }


def logged_rollout_diagnostics(path: str | Path) -> list[dict]:
    """Per step logged in a run's ``rationales.jsonl`` (one group of rollouts each): the step
    and ``rationale_diagnostics`` of that group against its prompt text."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        sample = json.loads(line)
        texts = [sample["text"]] * len(sample["rationales"])
        rows.append({"step": sample["step"], **rationale_diagnostics(texts, sample["rationales"])})
    return rows


def logged_rollouts(
    path: str | Path, steps: list[int], keep: int = 2, chars: int = 160
) -> list[dict]:
    """For each of ``steps``, the logged step of ``rationales.jsonl`` nearest to it and its
    first ``keep`` rollouts cut to ``chars`` characters: what a record quotes of the policy's
    writing, kept with the numbers once the run folder is gone."""
    logged = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]
    if not logged:
        return []
    quoted = []
    for step in steps:
        sample = min(logged, key=lambda s: (abs(s["step"] - step), s["step"]))
        quoted.append(
            {
                "step": step,
                "logged_step": sample["step"],
                "rollouts": [text[:chars] for text in sample["rationales"][:keep]],
            }
        )
    return quoted


#: The text written for a diagnostic a point lacks. Distinct-2 is missing when no rationale
#: holds two words (each one unbroken string, as a collapsed policy can write).
MISSING = "none"


def formatted(value: float | None, style: str) -> str:
    return MISSING if value is None else format(value, style)


def first_to_last(points: tuple[dict, dict], key: str, style: str) -> str:
    """``first → last`` of one diagnostic of two points (``MISSING`` where a point has none)."""
    return " → ".join(formatted(point.get(key), style) for point in points)
