"""The book's one decision rule, stated once: every verdict on a change is read by it.

A change is called only when it clears its noise band (three
standard errors of a paired change; the 95 % bands of two rows added in quadrature where
no pairing was kept). A change inside its band is "no measured difference" only when the
band itself is narrower than a change that would matter; else the measurement cannot tell.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

HIGHER, LOWER = "higher", "lower"
NO_DIFFERENCE, TOO_NOISY = "no measured difference", "too noisy to tell"
VERDICTS = (HIGHER, LOWER, NO_DIFFERENCE, TOO_NOISY)
#: The smallest change that would matter, in points (scores x 100). The paper's smallest gap
#: between two methods is GRACE over contrastive fine-tuning, +1.1 points.
MATTERS = 1.0
#: The rule's outcomes in the book's words.
PHRASES = {
    HIGHER: "a gain beyond the noise",
    LOWER: "a loss beyond the noise",
    NO_DIFFERENCE: "no measured difference (the noise rules out a change that would matter)",
    TOO_NOISY: "too noisy to tell (the noise is wider than a change that would matter)",
}


@dataclass(frozen=True)
class Difference:
    """``after - before`` with the half-width of its noise band, and the smallest change that
    would matter in the same unit (``MATTERS`` points; ``fraction`` for 0-1 scores)."""

    value: float
    noise: float
    matters: float = MATTERS

    @classmethod
    def fraction(cls, value: float, noise: float) -> Difference:
        """A change of a 0-1 score (MRR, a cosine, a share), read by the same rule."""
        return cls(value, noise, MATTERS / 100)

    @property
    def verdict(self) -> str:
        """The decision rule's outcome, one of ``VERDICTS``."""
        if abs(self.value) > self.noise:
            return HIGHER if self.value > 0 else LOWER
        return TOO_NOISY if not self.noise <= self.matters else NO_DIFFERENCE

    def __str__(self) -> str:
        return f"{self.value:+.2f} ± {self.noise:.2f}"


def paired(change: float, stderr: float, sigmas: float = 3.0) -> Difference:
    """A paired change of a 0-1 score and its standard error, as the rule reads it: against
    ``sigmas`` standard errors."""
    return Difference.fraction(change, sigmas * stderr)


def paired_from(changes: Sequence[float]) -> Difference:
    """``paired`` from per-item changes (after - before on the same items): their mean against
    three standard errors of it; NaN noise for fewer than two items."""
    changes = [float(c) for c in changes]
    if len(changes) < 2:
        return Difference.fraction(sum(changes) / len(changes) if changes else math.nan, math.nan)
    mean = sum(changes) / len(changes)
    variance = sum((c - mean) ** 2 for c in changes) / (len(changes) - 1)
    return paired(mean, math.sqrt(variance / len(changes)))
