"""How far one sampled rationale moves the scores, and what greedy decoding, averaging or a
longer rationale buys, all from one generation pass per model.

The paper scores one rationale sampled at temperature 1 per text. Here each text's prompt is
prefilled once and continued k times (``GraceEncoder.encode_variants``): "draw j alone" (k
single-sample scores: the spread a new sampling seed gives), "mean of the first m draws",
greedy decoding, draw 1 cut at every length of the length curve and the prompt alone (direct
mode) all come from that pass, and each report is still keyed by the settings that decide
it, so it equals (and is interchangeable with) a report measured on its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from grace.encoder import EncoderConfig, GraceEncoder, Variant, mean_of_draws
from grace.evaluation import cached_report, report_path
from grace.evaluation.model import TextEncoder, model_meta
from grace.evaluation.results import summarize
from grace.runs import report_key


class VariantBank:
    """Every variant's embedding of each text an encoder has seen, from one shared pass.

    ``seconds`` sums, per variant, what the pass spent on it alone (its prompts' prefill and
    its rows' decoding; see ``encode_variants``), and ``prefill`` the prefill's own share.
    """

    def __init__(self, encoder: GraceEncoder, variants: list[Variant]) -> None:
        self.encoder = encoder
        self.variants = list(dict.fromkeys(variants))
        self.memory: dict[str, dict[Variant, np.ndarray]] = {}
        self.seconds = dict.fromkeys(self.variants, 0.0)
        self.prefill = 0.0

    def __call__(self, texts: list[str], variants: list[Variant]) -> np.ndarray:
        """(N, H): the variant's embeddings, or the re-normalised mean of several variants'."""
        new = [text for text in dict.fromkeys(texts) if text not in self.memory]
        if new:
            encoded = self.encoder.encode_variants(new, self.variants, show_progress_bar=True)
            for n, text in enumerate(new):
                self.memory[text] = {v: encoded.embeddings[v][n] for v in self.variants}
            for v in self.variants:
                self.seconds[v] += encoded.seconds[v]
            self.prefill += encoded.prefill_seconds
        picked = np.stack([[self.memory[t][v] for v in variants] for t in texts])  # (N, m, H)
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
        return TextEncoder(lambda texts, batch_size=None: self(texts, variants), meta)


def draw_variants(encoder: GraceEncoder, name: str, means: tuple[int, ...] = (2, 4)) -> dict:
    """mteb encoders ``draw 1`` .. ``draw k`` and ``mean of m`` (m in ``means``, m <= k)."""
    draws = encoder.draw_variants()
    bank = VariantBank(encoder, draws)
    variants = {
        f"draw {j + 1}": bank.text_encoder([v], f"{name}-draw {j + 1}") for j, v in enumerate(draws)
    }
    for m in means:
        if m <= len(draws):
            variants[f"mean of {m}"] = bank.text_encoder(draws[:m], f"{name}-mean of {m}")
    return variants


@dataclass
class Planned:
    """One report to produce: its label, the key of what decides it, and its embedding (the
    re-normalised mean of ``variants``; one variant: that variant)."""

    label: str
    key: dict
    variants: list[Variant]


@dataclass
class RowReports:
    """The reports of one model from ``evaluate_rows``, each a ``cached_report`` dict."""

    draws: dict[str, dict] = field(default_factory=dict)  # "<label> (draw j)", "(mean of m)"
    greedy: dict | None = None
    direct: dict | None = None
    lengths: dict[int, dict] = field(default_factory=dict)  # 0 = direct; the cap = draw 1

    def all(self) -> dict[str, dict]:
        found = dict(self.draws)
        for report in [self.greedy, self.direct, *self.lengths.values()]:
            if report is not None:
                found[report["label"]] = report
        return found


def evaluate_rows(
    model: str,
    label: str,
    suite: str,
    folder: str | Path,
    means: tuple[int, ...] = (2, 4),
    greedy: bool = False,
    lengths: list[int] | tuple[int, ...] = (),
    direct: bool = False,
    curve: str | None = None,
    **settings,
) -> RowReports:
    """A model's rationale row and its variants, cached in ``folder``, from one pass.

    Reports (labels): ``"<label> (draw j)"`` for the k = ``num_rationales`` draws and
    ``"<label> (mean of m)"`` (m in ``means``, m <= k); with ``greedy`` ``"<label> (greedy)"``
    (temperature 0); for each of ``lengths`` one sampled rationale (draw 1) of at most that
    many tokens, ``"<curve>, L tokens"``, where 0 is ``"<curve>, direct"`` (also made with
    ``direct``) and the evaluation length is draw 1 itself. ``curve`` defaults to ``label``.

    Each report is keyed as if measured on its own: the draws by the row's settings and the
    variant, greedy by ``temperature=0``, a length point by ``max_new_tokens=L`` and one
    draw, the direct report by direct mode (which ignores sampling settings). The model is
    loaded, and one ``encode_variants`` pass made for the missing reports only, when any is
    missing; reports made by the pass also record ``cost_seconds``, the pass's seconds that
    report alone needed.
    """
    config = EncoderConfig(**settings)
    if config.mode == "direct" or not config.single_pass:
        raise ValueError(
            "evaluate_rows pools the states of one generation pass (rationale mode, "
            "single_pass=True); use evaluate_cached for other settings."
        )
    curve = curve or label
    cap, k = config.max_new_tokens, config.draws
    draws = [Variant(cap, None, j) for j in range(k)]
    key = report_key(model, suite, **settings)
    plans = {"draws": {}, "greedy": None, "direct": None, "lengths": {}}
    for j, variant in enumerate(draws):
        name = f"draw {j + 1}"
        plans["draws"][name] = Planned(draw_label(label, name), key | {"variant": name}, [variant])
    for m in means:
        if m <= k:
            name = f"mean of {m}"
            plans["draws"][name] = Planned(
                draw_label(label, name), key | {"variant": name}, draws[:m]
            )
    if greedy:
        changes = {"temperature": 0}
        plans["greedy"] = Planned(
            draw_label(label, "greedy"),
            report_key(model, suite, **(settings | changes)),
            [Variant(cap, 0, 0)],
        )
    if direct or 0 in lengths:
        plans["direct"] = Planned(
            f"{curve}, direct",
            report_key(model, suite, **(settings | {"mode": "direct"})),
            [Variant(0)],
        )
    for length in sorted(set(lengths)):
        if length == 0:
            plans["lengths"][0] = plans["direct"]
        elif length == cap:
            plans["lengths"][length] = plans["draws"]["draw 1"]
        else:
            changes = {"mode": "rationale", "max_new_tokens": length, "num_rationales": 1}
            plans["lengths"][length] = Planned(
                f"{curve}, {length} tokens",
                report_key(model, suite, **(settings | changes)),
                [Variant(length, None, 0)],
            )

    every = list(plans["draws"].values()) + list(plans["lengths"].values())
    every += [p for p in (plans["greedy"], plans["direct"]) if p is not None]
    every = list({p.label: p for p in every}.values())
    made = run_plans(model, every, suite, folder, settings)
    return RowReports(
        draws={p.label: made[p.label] for p in plans["draws"].values()},
        greedy=made[plans["greedy"].label] if plans["greedy"] else None,
        direct=made[plans["direct"].label] if plans["direct"] else None,
        lengths={length: made[p.label] for length, p in plans["lengths"].items()},
    )


def run_plans(
    model: str | GraceEncoder, plans: list[Planned], suite: str, folder: str | Path, settings
) -> dict[str, dict]:
    """``cached_report`` for each plan; the missing ones share one ``VariantBank``."""
    missing = [p for p in plans if not has_report(report_path(folder, p.label), p.key)]
    banks: list[VariantBank] = []

    def make(plan: Planned) -> TextEncoder:
        if not banks:
            encoder = (
                model
                if isinstance(model, GraceEncoder)
                else GraceEncoder.from_pretrained(model, **settings)
            )
            banks.append(VariantBank(encoder, [v for p in missing for v in p.variants]))
        return banks[0].text_encoder(plan.variants, f"{Path(str(model)).name}-{plan.label}")

    made = {
        p.label: cached_report(
            report_path(folder, p.label), p.label, lambda p=p: make(p), suite, p.key
        )
        for p in plans
    }
    if banks:
        for plan in missing:
            report = made[plan.label] | {"cost_seconds": round(banks[0].cost(plan.variants), 3)}
            report_path(folder, plan.label).write_text(json.dumps(report, indent=2, default=str))
            made[plan.label] = report
    return made


def has_report(path: Path, key: dict) -> bool:
    """Whether ``path`` holds a report made under ``key`` (what ``cached_report`` reuses)."""
    if not path.exists():
        return False
    return json.loads(path.read_text()).get("key") == json.loads(json.dumps(key))


def evaluate_draws(
    model: str,
    label: str,
    suite: str,
    folder: str | Path,
    means: tuple[int, ...] = (2, 4),
    **settings,
) -> dict[str, dict]:
    """Reports ``"<label> (draw j)"`` and ``"<label> (mean of m)"``, cached in ``folder``
    (``evaluate_rows`` without greedy or lengths)."""
    return evaluate_rows(model, label, suite, folder, means, **settings).draws


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


def length_reports(
    models: dict[str, str],
    row_labels: dict[str, str],
    lengths: list[int],
    suite: str,
    folder: str | Path,
    **settings,
) -> dict[str, dict]:
    """``{"<name>, <length>": report}``: each point of the length curve (0 = direct), one
    sampled rationale (draw 1) per text, from the pass of each model's ``evaluate_rows`` (so a
    notebook that ran ``evaluate_rows`` with these lengths before has measured them all)."""
    reports = {}
    for name, model in models.items():
        row = evaluate_rows(
            model, row_labels[name], suite, folder, lengths=lengths, curve=name, **settings
        )
        for length in lengths:
            reports[f"{name}, {length}"] = row.lengths[length]
    return reports


def length_curve(
    models: dict[str, str],
    row_labels: dict[str, str],
    lengths: list[int],
    suite: str,
    folder: str | Path,
    **settings,
) -> pd.DataFrame:
    """Suite scores against rationale length (0 = direct), one sampled rationale per text.

    Every point of a model comes from the pass of its ``evaluate_rows`` (``length_reports``:
    draw 1 cut at each length; the point at the evaluation length is draw 1 itself, the
    0-token point the direct report). ``eval seconds`` is what each point alone needed of that
    pass (its prefill and the decoding of its rows up to its length), or, for a report
    measured on its own, its time.
    """
    reports = length_reports(models, row_labels, lengths, suite, folder, **settings)
    table = summarize({label: report["tasks"] for label, report in reports.items()})
    table["eval seconds"] = [r.get("cost_seconds", r["seconds"]) for r in reports.values()]
    return table


def variant_plan(
    encoder: GraceEncoder,
    means: tuple[int, ...] = (2, 4),
    greedy: bool = False,
    lengths: list[int] | tuple[int, ...] = (),
) -> dict[str, list[Variant]]:
    """Name -> variants (their mean) of the variants ``grace eval`` reports beside the
    encoder's own embedding: each draw and the mean of m draws (k > 1), greedy, and draw 1 at
    each of ``lengths`` (``"L tokens"``; 0: ``"direct"``)."""
    config = encoder.config
    draws = encoder.draw_variants()
    plan: dict[str, list[Variant]] = {}
    if len(draws) > 1:
        plan |= {f"draw {j + 1}": [v] for j, v in enumerate(draws)}
        plan |= {f"mean of {m}": draws[:m] for m in means if 1 < m < len(draws)}
    if greedy:
        plan["greedy"] = [Variant(config.max_new_tokens, 0, 0)]
    for length in sorted(set(lengths)):
        plan["direct" if length == 0 else f"{length} tokens"] = [Variant(length, None, 0)]
    return plan


def evaluate_variants(
    encoder: GraceEncoder,
    suite: str,
    label: str,
    plan: dict[str, list[Variant]],
    meta=None,
) -> tuple[dict, dict[str, dict]]:
    """The encoder's own report and one per planned variant (``"<label> (<name>)"``), all
    from one ``encode_variants`` pass; variant reports carry ``cost_seconds`` (see
    ``VariantBank.cost``). Nothing is cached."""
    from grace.evaluation import evaluate

    own = encoder.draw_variants()
    bank = VariantBank(encoder, own + [v for variants in plan.values() for v in variants])
    main_encoder = bank.text_encoder(own, label)
    if meta is not None:
        main_encoder.mteb_model_meta = meta
    main = evaluate(main_encoder, suite, label=label)
    reports = {
        name: evaluate(
            bank.text_encoder(variants, f"{label}-{name}"), suite, label=f"{label} ({name})"
        )
        for name, variants in plan.items()
    }
    for name, variants in plan.items():
        reports[name]["cost_seconds"] = round(bank.cost(variants), 3)
    main["cost_seconds"] = round(bank.cost(own), 3)
    return main, reports


def single_draws(reports: dict[str, dict]) -> list[dict]:
    """The single-draw reports (``"<label> (draw j)"``) among a row's ``evaluate_rows`` draws,
    leaving out the means of several draws: the reports whose mean is the row's value."""
    return [report for label, report in reports.items() if "(draw " in label]


def length_changes(reports: dict[str, dict], draw_std: dict[str, float]) -> pd.DataFrame:
    """Each point of ``length_reports`` against the same model's direct point (``"<name>,
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
