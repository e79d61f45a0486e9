"""How far one sampled rationale moves the scores, and what greedy decoding, averaging or a
longer rationale buys, all from one generation pass per model.

The paper scores one rationale sampled at temperature 1 per text. Here each text's prompt is
prefilled once and continued k times (``GraceEncoder.encode_variants``): "draw j alone" (k
single-sample scores: the spread a new sampling seed gives), "mean of the first m draws",
greedy decoding, draw 1 cut at every length of the length curve and the prompt alone (direct
mode) all come from that pass, and each report is still keyed by the settings that decide
it, so it equals (and is interchangeable with) a report measured on its own. The entry point
is ``grace.evaluation.evaluate``; this module plans its reports and reads them into tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from grace.constants import MEMORY_MB
from grace.encoder import EncoderConfig, GraceEncoder, Variant, mean_of_draws
from grace.evaluation.model import EmbeddingMemory, TextEncoder, model_meta
from grace.evaluation.results import summarize
from grace.evaluation.suites import kept_under, report_path, score, write_report
from grace.runs import report_key


class VariantBank:
    """Every variant's embedding of each text an encoder has seen, from one shared pass.

    Each variant's embeddings are kept in an ``EmbeddingMemory``: in RAM up to its share of
    ``memory_mb``, then on disk, so many variants of a large corpus fit. ``seconds`` sums, per
    variant, what the pass spent on it alone (its prompts' prefill and its rows' decoding; see
    ``encode_variants``), and ``prefill`` the prefill's own share.
    """

    def __init__(
        self, encoder: GraceEncoder, variants: list[Variant], memory_mb: float = MEMORY_MB
    ) -> None:
        self.encoder = encoder
        self.variants = list(dict.fromkeys(variants))
        self.share_mb = memory_mb / max(1, len(self.variants))
        self.memory = {v: EmbeddingMemory(self.share_mb) for v in self.variants}
        self.seconds = dict.fromkeys(self.variants, 0.0)
        self.prefill = 0.0

    def __call__(self, texts: list[str], variants: list[Variant]) -> np.ndarray:
        """(N, H): the variant's embeddings, or the re-normalised mean of several variants'."""
        seen = self.memory[self.variants[0]]
        new = [text for text in dict.fromkeys(texts) if text not in seen]
        if new:
            encoded = self.encoder.encode_variants(new, self.variants, show_progress_bar=True)
            for v in self.variants:
                self.memory[v].update(new, encoded.embeddings[v])
                self.seconds[v] += encoded.seconds[v]
            self.prefill += encoded.prefill_seconds
        picked = np.stack([self.memory[v].stack(texts) for v in variants], axis=1)  # (N, m, H)
        return picked[:, 0] if len(variants) == 1 else mean_of_draws(picked)

    def cost(self, variants: list[Variant]) -> float:
        """Seconds of the pass that these variants alone need: one prefill and their decoding."""
        return self.prefill + sum(self.seconds[v] - self.prefill for v in variants)

    def text_encoder(self, variants: list[Variant], name: str) -> TextEncoder:
        model = self.encoder.model
        meta = model_meta(
            f"grace/{name.replace(' ', '-')}",
            "variants",
            model.config.hidden_size,
            model.num_parameters(),
        )
        # The bank keeps every variant already; the mteb side keeps the one it asked for.
        encode = lambda texts, batch_size=None: self(texts, variants)  # noqa: E731
        return TextEncoder(encode, meta, memory_mb=self.share_mb)


@dataclass
class Planned:
    """One report to produce: its label, the key of what decides it, and its embedding (the
    re-normalised mean of ``variants``; one variant: that variant)."""

    label: str
    key: dict
    variants: list[Variant]


@dataclass
class Reports:
    """What one ``grace.evaluation.evaluate`` call measured for a model, each a report dict."""

    main: dict  # the model's own embedding (k > 1 draws: their re-normalised mean)
    draws: dict[str, dict] = field(default_factory=dict)  # "<label> (draw j)", "(mean of m)"
    greedy: dict | None = None
    direct: dict | None = None
    lengths: dict[int, dict] = field(default_factory=dict)  # 0 = direct; the cap = draw 1

    def variants(self) -> dict[str, dict]:
        """Every report but ``main``, by label."""
        found = dict(self.draws)
        for report in [self.greedy, self.direct, *self.lengths.values()]:
            if report is not None:
                found[report["label"]] = report
        found.pop(self.main["label"], None)
        return found

    def single_draws(self) -> list[dict]:
        """The reports of one sampled rationale per text (``"<label> (draw j)"``), whose mean
        is the row's value; a model without draws (direct mode) is its main report."""
        singles = [report for label, report in self.draws.items() if "(draw " in label]
        return singles or [self.main]


def shared_pass_reports(
    model: str,
    label: str,
    suite: str,
    folder: str | Path | None,
    settings: dict,
    means: tuple[int, ...] = (2, 4),
    greedy: bool = False,
    direct: bool = False,
    lengths: list[int] | tuple[int, ...] = (),
    curve: str | None = None,
    device: str | None = None,
    memory_mb: float = MEMORY_MB,
) -> Reports:
    """A rationale-mode model's reports from one ``encode_variants`` pass (see
    ``grace.evaluation.evaluate`` for what each is and how it is labelled).

    Each report is keyed as if measured on its own: the model's own embedding by its settings,
    each draw and mean by those and the variant, greedy by ``temperature=0``, a length point by
    ``max_new_tokens=L`` and one draw, the direct report by direct mode (which ignores sampling
    settings). The model is loaded, and the pass made, only for reports ``folder`` lacks.
    """
    config = EncoderConfig(**settings)
    curve = curve or label
    cap, k = config.max_new_tokens, config.draws
    draws = [Variant(cap, None, j) for j in range(k)]
    key = report_key(model, suite, **settings)
    main = Planned(label, key, draws)
    planned: dict[str, Planned] = {}
    for j, variant in enumerate(draws):
        name = f"draw {j + 1}"
        planned[name] = Planned(draw_label(label, name), key | {"variant": name}, [variant])
    for m in means:
        if m <= k:
            name = f"mean of {m}"
            planned[name] = Planned(draw_label(label, name), key | {"variant": name}, draws[:m])
    greedy_plan = direct_plan = None
    if greedy:
        greedy_plan = Planned(
            draw_label(label, "greedy"),
            report_key(model, suite, **(settings | {"temperature": 0})),
            [Variant(cap, 0, 0)],
        )
    if direct or 0 in lengths:
        direct_plan = Planned(
            f"{curve}, direct",
            report_key(model, suite, **(settings | {"mode": "direct"})),
            [Variant(0)],
        )
    length_plans: dict[int, Planned] = {}
    for length in sorted(set(lengths)):
        if length == 0:
            length_plans[0] = direct_plan
        elif length == cap:
            length_plans[length] = planned["draw 1"]
        else:
            changes = {"mode": "rationale", "max_new_tokens": length, "num_rationales": 1}
            length_plans[length] = Planned(
                f"{curve}, {length} tokens",
                report_key(model, suite, **(settings | changes)),
                [Variant(length, None, 0)],
            )
    every = [main, *planned.values(), *length_plans.values()]
    every += [p for p in (greedy_plan, direct_plan) if p is not None]
    plans = list({p.label: p for p in every}.values())
    made = run_plans(model, plans, suite, folder, settings, device, memory_mb)
    return Reports(
        main=made[main.label],
        draws={p.label: made[p.label] for p in planned.values()},
        greedy=made[greedy_plan.label] if greedy_plan else None,
        direct=made[direct_plan.label] if direct_plan else None,
        lengths={length: made[p.label] for length, p in length_plans.items()},
    )


def run_plans(
    model: str,
    plans: list[Planned],
    suite: str,
    folder: str | Path | None,
    settings: dict,
    device: str | None = None,
    memory_mb: float = MEMORY_MB,
) -> dict[str, dict]:
    """A report per plan: the one kept in ``folder`` under its key, else scored from one shared
    ``VariantBank`` (plans of the same variants are scored once). Reports made here record
    ``cost_seconds``, the seconds of the pass that report alone needed."""
    made: dict[str, dict] = {}
    missing = []
    for plan in plans:
        if (kept := kept_under(folder, plan.label, plan.key)) is not None:
            made[plan.label] = kept
        else:
            missing.append(plan)
    if not missing:
        return made
    encoder = GraceEncoder.from_pretrained(model, device=device, **settings)
    bank = VariantBank(encoder, [v for p in missing for v in p.variants], memory_mb)
    scored: dict[tuple[Variant, ...], dict] = {}
    for plan in missing:
        group = tuple(plan.variants)
        if group not in scored:
            name = f"{Path(model).name}-{plan.label}"
            scored[group] = score(bank.text_encoder(plan.variants, name), suite)
        made[plan.label] = scored[group] | {"label": plan.label, "key": plan.key}
    for plan in missing:  # every text's variants are sampled by now: their costs are known
        made[plan.label]["cost_seconds"] = round(bank.cost(plan.variants), 3)
        if folder is not None:
            write_report(report_path(folder, plan.label), made[plan.label])
    return made


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
    """A row's draw reports -> (each variant's summary, single draws' mean/std)."""
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


def length_changes(reports: dict[str, dict], draw_std: dict[str, float]) -> pd.DataFrame:
    """Each point of ``length_points`` against the same model's direct point (``"<name>,
    0"``), with its 95 % noise and verdict (``results.changes_against``). ``draw_std``: per
    model name, the spread of single draws (the sampling noise of every rationale point)."""
    from grace.evaluation.results import changes_against

    names = list(dict.fromkeys(label.rsplit(", ", 1)[0] for label in reports))
    parts = []
    for name in names:
        points = {label: r for label, r in reports.items() if label.rsplit(", ", 1)[0] == name}
        stds = {label: draw_std.get(name, 0.0) for label in points if not label.endswith(", 0")}
        parts.append(changes_against(points, f"{name}, 0", stds))
    return pd.concat(parts)


def length_points(rows: dict[str, Reports]) -> dict[str, dict]:
    """``{"<name>, <length>": report}``: each model's length-curve points (0 = direct)."""
    return {
        f"{name}, {length}": report
        for name, row in rows.items()
        for length, report in row.lengths.items()
    }


def length_curve(rows: dict[str, Reports]) -> pd.DataFrame:
    """Suite scores against rationale length (0 = direct), one sampled rationale per text.

    ``eval seconds`` is what each point alone needed of its model's shared generation pass
    (its prefill and the decoding of its rows up to its length), or, for a report measured on
    its own, its time.
    """
    points = length_points(rows)
    table = summarize({label: report["tasks"] for label, report in points.items()})
    table["eval seconds"] = [r.get("cost_seconds", r["seconds"]) for r in points.values()]
    return table
