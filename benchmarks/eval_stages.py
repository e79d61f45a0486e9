"""Evaluating one model the old way and the shared way: wall times, their ratio, same outputs.

    python benchmarks/eval_stages.py [--texts 96] [--draws 4] [--max-new-tokens 32]
        [--lengths 0,16,32,64,128] [--batch-size 64] [--output eval_stages.json]

One model's evaluation in notebooks 8 and 10 needs, per text of the suite: k sampled
rationales (each draw alone and the means of draws), one greedy rationale, one sampled
rationale at each length of the length curve (0 = direct; the evaluation length is draw 1)
and the direct embedding. The old path makes each of those with its own encoder (one
``generate`` call per row, so every draw prefills its prompt again, and every length
generates again); the new path is one ``GraceEncoder.encode_variants`` call: one prefill
per text, k + 1 continuations of it, draw 1 carried to the longest length and pooled at
every shorter one. Both run here on the same texts (the suite's distinct texts, as mteb asks
for them, or an evenly spaced subset), one after the other; the scores of a report are a
function of these embeddings, so equal embeddings mean equal reports. mteb's own scoring
(about 2-3 s per report from stored embeddings) is the same on both paths and not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from grace.encoder import GraceEncoder, Variant  # noqa: E402
from grace.models import load_model  # noqa: E402


def suite_texts(suite: str) -> list[str]:
    """The distinct texts mteb asks an encoder for over a suite, in the order it asks."""
    import mteb

    from grace.evaluation import resolve_tasks
    from grace.evaluation.model import TextEncoder, model_meta

    seen: dict[str, None] = {}

    def record(texts: list[str], batch_size: int | None = None) -> np.ndarray:
        seen.update(dict.fromkeys(texts))
        vectors = np.random.default_rng(len(seen)).normal(size=(len(texts), 8))
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    encoder = TextEncoder(record, model_meta("bench/recorder", "1", 8, None))
    mteb.evaluate(encoder, resolve_tasks(suite), cache=None, show_progress_bar=False)
    return list(seen)


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--suite", default="offline")
    parser.add_argument("--texts", type=int, default=0, help="evenly spaced subset (0: all)")
    parser.add_argument("--draws", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--lengths", default="0,16,32,64,128")
    parser.add_argument("--batch-size", type=int, default=64, help="rows, as in the cpu profile")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: as it is)")
    parser.add_argument("--skip-old", action="store_true", help="time the new path only")
    parser.add_argument(
        "--direct-check",
        action="store_true",
        help="also time prompts alone (direct mode): system prefix prefilled once per batch or "
        "per prompt, 32 or 64 prompts per forward pass",
    )
    parser.add_argument("--output", help="also write the figures here as JSON")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    texts = suite_texts(args.suite)
    total = len(texts)
    if args.texts and args.texts < total:
        texts = [texts[i] for i in np.linspace(0, total - 1, args.texts).round().astype(int)]
    lengths = sorted({int(x) for x in args.lengths.split(",")})
    cap, k = args.max_new_tokens, args.draws
    model, tokenizer = load_model(args.model)
    settings = dict(max_new_tokens=cap, num_rationales=k, seed=0, batch_size=args.batch_size)
    print(
        f"model={args.model} suite={args.suite} texts={len(texts)} of {total} draws={k} "
        f"max_new_tokens={cap} lengths={lengths} batch={args.batch_size} "
        f"threads={torch.get_num_threads()}"
    )

    # What one model's evaluation needs, as variants (see the module docstring).
    draws = [Variant(cap, None, j) for j in range(k)]
    greedy = Variant(cap, 0, 0)
    points = {length: Variant(length, None, 0) for length in lengths}  # 0: direct; cap: draw 1
    variants = list(dict.fromkeys([*draws, greedy, *points.values()]))

    figures: dict = {"texts": len(texts), "suite_texts": total, "old": {}, "new": {}}
    old: dict[Variant, np.ndarray] = {}
    if not args.skip_old:
        jobs = {"draws": (settings, draws), "greedy": (settings | {"temperature": 0}, [greedy])}
        for length in lengths:
            if length == 0:
                jobs["direct"] = (settings | {"mode": "direct"}, [points[0]])
            elif length != cap:
                one = settings | {"max_new_tokens": length, "num_rationales": 1}
                jobs[f"{length} tokens"] = (one, [points[length]])
        for name, (options, wanted) in jobs.items():
            encoder = GraceEncoder(model, tokenizer, **options)
            encoder.share_work = False  # the old path: one generate call per row
            (embeddings, _), seconds = timed(lambda e=encoder: e.encode_draws(texts))
            for j, variant in enumerate(wanted):
                old[variant] = embeddings[:, j]
            figures["old"][name] = round(seconds, 1)
            print(f"old  {name:12s} {seconds:8.1f} s")
        figures["old"]["total"] = round(sum(figures["old"].values()), 1)
        print(f"old  {'total':12s} {figures['old']['total']:8.1f} s")

    encoder = GraceEncoder(model, tokenizer, **settings)
    encoded, seconds = timed(lambda: encoder.encode_variants(texts, variants))
    figures["new"] = {
        "total": round(seconds, 1),
        "prefill": round(encoded.prefill_seconds, 1),
        "variants": len(variants),
    }
    print(
        f"new  {'one pass':12s} {seconds:8.1f} s  ({len(variants)} variants; prefill "
        f"{encoded.prefill_seconds:.1f} s)"
    )
    if old:
        ratio = figures["old"]["total"] / seconds
        figures["ratio"] = round(ratio, 2)
        print(f"ratio old / new: {ratio:.2f}x")
        worst = {}
        for variant, embeddings in old.items():
            cosine = (embeddings * encoded.embeddings[variant]).sum(axis=1)
            worst[str(variant)] = float(cosine.min())
        figures["min_cosine"] = worst
        print(f"same outputs: lowest cosine old vs new {min(worst.values()):.6f}")
        for name, value in worst.items():
            print(f"  {name}: {value:.6f}")
    if args.direct_check:
        import grace.rationale

        figures["direct"] = {}
        for share in (False, True):
            for size in (32, 64):
                grace.rationale.PREFILL_ROWS = size
                encoder = GraceEncoder(model, tokenizer, **settings)
                encoder.share_prefix = share
                _, seconds = timed(lambda e=encoder: e.encode_variants(texts, [Variant(0)]))
                name = f"prefix {'shared' if share else 'per prompt'}, {size} prompts"
                figures["direct"][name] = round(seconds, 1)
                print(f"direct  {name:32s} {seconds:8.1f} s")
        grace.rationale.PREFILL_ROWS = 32
    caps = {length: float(encoded.hit_cap[v].mean()) for length, v in points.items() if length}
    figures["cap_hit_share"] = caps
    print("share of rationales hitting the cap:", {k: round(v, 2) for k, v in caps.items()})
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
