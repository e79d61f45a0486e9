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
from grace.evaluation import cached_report, evaluate_cached, report_path
from grace.evaluation.model import TextEncoder, model_meta
from grace.evaluation.results import summarize
from grace.runs import report_key


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
    key = report_key(model, suite, **settings)
    variants: dict[str, TextEncoder] = {}

    def variant(name: str) -> TextEncoder:
        if not variants:
            encoder = GraceEncoder.from_pretrained(model, **settings)
            variants.update(draw_variants(encoder, Path(model).name, means))
        return variants[name]

    return {
        draw_label(label, name): cached_report(
            report_path(folder, draw_label(label, name)),
            draw_label(label, name),
            lambda name=name: variant(name),
            suite,
            key | {"variant": name},
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


def draw_label(label: str, variant: str) -> str:
    """The report label of one variant of a rationale row: ``"GRACE supervised (draw 1)"``."""
    return f"{label} ({variant})"


def draw_summary(reports: dict[str, dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``evaluate_draws`` reports of one row -> (each variant's summary, single draws' mean/std)."""
    table = summarize({label: report["tasks"] for label, report in reports.items()})
    singles = [label for label in table.index if "(draw " in label]
    return table, mean_std(table, singles)


def main_table(
    direct: dict[str, dict], spreads: dict[str, pd.DataFrame], order: list[str]
) -> pd.DataFrame:
    """The results table: direct rows as measured, rationale rows as the mean over draws."""
    table = summarize({label: report["tasks"] for label, report in direct.items()})
    for label, stats in spreads.items():
        table.loc[label] = stats.loc["mean"]
    return table.loc[[label for label in order if label in table.index]]


def variants_table(
    tables: dict[str, pd.DataFrame],
    spreads: dict[str, pd.DataFrame],
    greedy: dict[str, dict],
    means: tuple[int, ...] = (2, 4),
) -> pd.DataFrame:
    """Per row: one draw (mean and std over draws), the mean of m draws, and greedy."""
    rows = {}
    for label, report in greedy.items():
        stats = spreads[label]
        rows[f"{label}: one draw (mean)"] = stats.loc["mean"]
        rows[f"{label}: one draw (std)"] = stats.loc["std"]
        for m in means:
            name = draw_label(label, f"mean of {m}")
            if name in tables[label].index:
                rows[f"{label}: mean of {m} draws"] = tables[label].loc[name]
        rows[f"{label}: greedy"] = summarize({label: report["tasks"]}).iloc[0]
    return pd.DataFrame(rows).T


def length_curve(
    models: dict[str, str],
    row_labels: dict[str, str],
    lengths: list[int],
    suite: str,
    folder: str | Path,
    **settings,
) -> pd.DataFrame:
    """Suite scores against rationale length (0 = direct), one sampled rationale per text.

    A point at the evaluation length is draw 1 of that row's ``evaluate_draws`` reports and
    a 0-token point of a model with a direct row is that row: both are read, not measured
    again. ``eval seconds`` is each point's own cost (a shared draw pass counts once per draw).
    """
    k = EncoderConfig(**settings).draws
    points, seconds = {}, []
    for name, model in models.items():
        for length in lengths:
            if length == settings.get("max_new_tokens"):
                reports = evaluate_draws(model, row_labels[name], suite, folder, **settings)
                report = reports[draw_label(row_labels[name], "draw 1")]
                share = k
            else:
                mode = "direct" if length == 0 else "rationale"
                label = f"{name}, direct" if length == 0 else f"{name}, {length} tokens"
                changes = dict(mode=mode, max_new_tokens=max(length, 1), num_rationales=1)
                if length == 0:
                    changes = dict(mode=mode)  # the key of a direct row ignores sampling
                report = evaluate_cached(model, label, suite, folder, **(settings | changes))
                share = 1
            points[f"{name}, {length}"] = report["tasks"]
            seconds.append(report["seconds"] / share)
    table = summarize(points)
    table["eval seconds"] = seconds
    return table
