"""Evaluation through mteb: one ``evaluate`` for every model, suite and variant.

Suites (``suites.py``): ``offline`` (the mini-MTEB of ``tasks.py``, runs anywhere); ``paper``
(the reference's 56 names) and ``subset`` (the authors' quick 9), scored as the reference
scores them; ``mteb-eng`` (mteb's ``MTEB(eng, v1)`` benchmark, what the leaderboard shows); or
a comma-separated list of task names. All but ``offline`` download their data from the
Hugging Face hub.
"""

from __future__ import annotations

from pathlib import Path

from grace.constants import MEMORY_MB
from grace.encoder import EncoderConfig, saved_encoder_settings
from grace.evaluation.model import (
    MINILM,
    MINILM_NAME,
    GraceMTEBModel,
    TextEncoder,
    minilm_encoder,
)
from grace.evaluation.noise import Reports, shared_pass_reports
from grace.evaluation.results import bar_chart, summarize, to_markdown, with_paper
from grace.evaluation.suites import (
    PAPER_TASKS,
    SUBSET_TASKS,
    HubRequired,
    kept_report,
    report_path,
    resolve_tasks,
    score,
    suite_task_names,
    suite_tasks,
    write_report,
)
from grace.runs import report_key
from grace.sections import ConfigError


def evaluate(
    model: str | TextEncoder,
    suite: str = "offline",
    *,
    label: str | None = None,
    folder: str | Path | None = None,
    greedy: bool = False,
    direct: bool = False,
    lengths: list[int] | tuple[int, ...] = (),
    means: tuple[int, ...] = (2, 4),
    curve: str | None = None,
    results_cache: str | Path | None = None,
    output: str | Path | None = None,
    device: str | None = None,
    memory_mb: float = MEMORY_MB,
    **settings,
) -> Reports:
    """Score a model on a suite, with the variants of its rationales asked for.

    ``model``: a model name, hub id or folder (a trained folder embeds as its
    ``encoder_config.json`` says; ``settings``, ``EncoderConfig`` fields, override it: pass
    machine settings such as ``batch_size`` or ``cache_dir`` only, unless a change of
    encoding is the point; ``device`` places it), ``"minilm"`` for the off-the-shelf
    reference, or a ready ``TextEncoder``. Embeddings past ``memory_mb`` of RAM are kept on
    disk (``EmbeddingMemory``), so a large corpus fits.

    ``Reports.main`` is the model's own embedding, labelled ``label`` (default: the model's
    name). In rationale mode one generation pass also gives ``draws``: each of the k =
    ``num_rationales`` sampled rationales alone (``"<label> (draw j)"``) and the mean of the
    first m (``"<label> (mean of m)"``, m in ``means``, m <= k); with ``greedy``
    ``"<label> (greedy)"`` (temperature 0); with ``direct`` ``"<curve>, direct"`` (the prompt
    alone); for each of ``lengths`` draw 1 cut at that many tokens (``"<curve>, L tokens"``;
    0 is the direct report, the cap draw 1 itself). ``curve`` defaults to ``label``.

    ``folder`` keeps each report as ``<folder>/<label>.json`` under the key of what decides it
    (``grace.runs.report_key``) and reuses it while that key holds; without it nothing is kept.
    ``results_cache`` is mteb's ``ResultCache`` folder for the main report, which then resumes
    task by task (not with variants). ``output`` writes the main report, with a summary of
    each variant, as JSON. Variants a model cannot make are a ``ConfigError`` before anything
    loads.
    """
    variants_asked = greedy or direct or bool(lengths)
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)  # fails now, not after the run
    if isinstance(model, TextEncoder) or model == MINILM:
        if settings or variants_asked or device:
            raise ConfigError(
                "A ready encoder or minilm writes no rationales: encoder settings, greedy, "
                "direct and lengths do not apply."
            )
        if isinstance(model, TextEncoder):
            if folder is not None:
                raise ValueError("folder keeps reports by a model's name: pass the name.")
            reports = Reports(main=score(model, suite, label, results_cache))
        else:
            key = report_key(MINILM, suite)
            label = label or MINILM_NAME
            make = lambda: minilm_encoder(memory_mb)  # noqa: E731
            main = kept_report(folder, label, make, suite, key, results_cache)
            reports = Reports(main=main)
    else:
        model = str(model)
        settings = saved_encoder_settings(model) | settings
        config = EncoderConfig(**settings)
        label = label or f"grace/{Path(model).name}-{config.mode}"
        shared = config.mode == "rationale" and config.single_pass
        if variants_asked and not shared:
            how = f"{config.mode} mode" if config.mode != "rationale" else "single_pass=False"
            raise ConfigError(
                "greedy, direct and lengths are cut from one generation pass of sampled "
                f"rationales; this model embeds with {how}."
            )
        beyond = [n for n in lengths if n > config.max_new_tokens]
        if beyond:
            raise ConfigError(
                f"lengths {beyond} exceed the rationale cap max_new_tokens="
                f"{config.max_new_tokens}: a rationale is never cut longer than it is written."
            )
        if variants_asked and results_cache:
            raise ConfigError(
                "results_cache resumes one encoding of a suite; greedy, direct and lengths "
                "score several from one generation: drop one or the other."
            )
        if shared and not results_cache and (config.draws > 1 or variants_asked):
            reports = shared_pass_reports(
                model,
                label,
                suite,
                folder,
                settings,
                means,
                greedy,
                direct,
                lengths,
                curve,
                device,
                memory_mb,
            )
        else:
            key = report_key(model, suite, **settings)
            make = lambda: GraceMTEBModel(  # noqa: E731
                model, device=device, memory_mb=memory_mb, **settings
            )
            reports = Reports(main=kept_report(folder, label, make, suite, key, results_cache))
    if output:
        summaries = {
            name: {k: v for k, v in r.items() if k != "mteb"}
            for name, r in reports.variants().items()
        }
        write_report(output, reports.main | ({"variants": summaries} if summaries else {}))
    return reports


__all__ = [
    "evaluate",
    "Reports",
    "report_path",
    "GraceMTEBModel",
    "TextEncoder",
    "minilm_encoder",
    "resolve_tasks",
    "suite_tasks",
    "suite_task_names",
    "summarize",
    "with_paper",
    "to_markdown",
    "bar_chart",
    "PAPER_TASKS",
    "SUBSET_TASKS",
    "HubRequired",
]
