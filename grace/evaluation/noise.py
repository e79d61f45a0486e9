"""How far one sampled rationale moves the scores, and what greedy decoding or averaging buys.

The paper scores one rationale sampled at temperature 1 per text. Here one generation pass
writes k rationales per text into a ``DrawBank``; every variant reads from it, so "draw j
alone" (k single-sample scores: the spread a new sampling seed gives) and "mean of the first
m draws" cost no extra sampling. Greedy decoding is ``GraceMTEBModel(..., temperature=0)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from grace.encoder import EncoderConfig, GraceEncoder, mean_of_draws
from grace.evaluation import cached_report, report_path
from grace.evaluation.model import TextEncoder, model_meta


class DrawBank:
    """The (k, H) draw embeddings of each text an encoder has seen, computed once."""

    def __init__(self, encoder: GraceEncoder) -> None:
        self.encoder = encoder
        self.memory: dict[str, np.ndarray] = {}

    def __call__(self, texts: list[str]) -> np.ndarray:
        new = [text for text in dict.fromkeys(texts) if text not in self.memory]
        if new:
            draws, _ = self.encoder.encode_draws(new, show_progress_bar=True)
            self.memory.update(zip(new, draws, strict=True))
        return np.stack([self.memory[text] for text in texts])


def draw_variants(encoder: GraceEncoder, name: str, means: tuple[int, ...] = (2, 4)) -> dict:
    """mteb encoders ``draw 1`` .. ``draw k`` and ``mean of m`` (m in ``means``, m <= k)."""
    bank = DrawBank(encoder)
    k = encoder.config.draws

    def variant(label: str, pick) -> TextEncoder:
        meta = model_meta(
            f"grace/{name}-{label.replace(' ', '-')}",
            "draws",
            encoder.model.config.hidden_size,
            encoder.model.num_parameters(),
        )
        return TextEncoder(lambda texts: pick(bank(texts)), meta)

    variants = {f"draw {j + 1}": variant(f"draw {j + 1}", lambda d, j=j: d[:, j]) for j in range(k)}
    for m in means:
        if m <= k:
            label = f"mean of {m}"
            variants[label] = variant(label, lambda d, m=m: mean_of_draws(d[:, :m]))
    return variants


def evaluate_draws(
    model: str,
    label: str,
    suite: str,
    folder: str | Path,
    means: tuple[int, ...] = (2, 4),
    **settings,
) -> dict[str, dict]:
    """Reports ``"<label> (draw j)"`` and ``"<label> (mean of m)"``, cached in ``folder``.

    ``settings`` are ``EncoderConfig`` fields; ``num_rationales`` is k. The model is loaded
    and the k rationales per text sampled only if some report is missing.
    """
    k = EncoderConfig(**settings).draws
    names = [f"draw {j + 1}" for j in range(k)] + [f"mean of {m}" for m in means if m <= k]
    variants: dict[str, TextEncoder] = {}

    def variant(name: str) -> TextEncoder:
        if not variants:
            encoder = GraceEncoder.from_pretrained(model, **settings)
            variants.update(draw_variants(encoder, Path(model).name, means))
        return variants[name]

    return {
        f"{label} ({name})": cached_report(
            report_path(folder, f"{label} ({name})"),
            f"{label} ({name})",
            lambda name=name: variant(name),
            suite,
        )
        for name in names
    }


def mean_std(table: pd.DataFrame, rows: list[str]) -> pd.DataFrame:
    """Mean and sample standard deviation over ``rows`` of a summary table, per column."""
    picked = table.loc[rows]
    return pd.DataFrame({"mean": picked.mean(), "std": picked.std(ddof=1)}).T


def plus_minus(stats: pd.DataFrame, digits: int = 2) -> pd.Series:
    """``mean_std`` output as ``"46.75 ± 0.41"`` strings, per column."""
    mean, std = stats.loc["mean"], stats.loc["std"]
    return pd.Series(
        {
            c: f"{mean[c]:.{digits}f} ± {std[c]:.{digits}f}"
            for c in stats.columns
            if pd.notna(mean[c])
        }
    )
