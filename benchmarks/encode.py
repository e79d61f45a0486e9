"""Encoding throughput of SmolLM2-135M-Instruct: direct vs rationale (single / two pass).

    python benchmarks/encode.py [--texts 64] [--batch-size 8] [--max-new-tokens 64]

Prints texts/s for each mode, measured in one run on the same texts, the ratio of the
single-pass rationale mode to the reference's two-pass way, and how closely the two agree
(same seed, so the same rationales).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from grace.data import lee_documents  # noqa: E402
from grace.encoder import GraceEncoder  # noqa: E402
from grace.models import load_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--texts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1, help="runs per mode; medians shown")
    args = parser.parse_args()

    # First sentences of the Lee background news documents: real text of sentence length.
    texts = [doc.split(". ")[0] for doc in lee_documents()][: args.texts]
    model, tokenizer = load_model(args.model)
    print(
        f"model={args.model} texts={len(texts)} batch={args.batch_size} "
        f"max_new_tokens={args.max_new_tokens} threads={torch.get_num_threads()}"
    )

    runs = {
        "direct": dict(mode="direct"),
        "rationale, single pass": dict(mode="rationale", single_pass=True),
        "rationale, two passes": dict(mode="rationale", single_pass=False),
    }
    speeds, outputs = {}, {}
    for name, options in runs.items():
        encoder = GraceEncoder(
            model,
            tokenizer,
            max_new_tokens=args.max_new_tokens,
            seed=0,
            batch_size=args.batch_size,
            **options,
        )
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            outputs[name] = encoder.encode(texts, show_progress_bar=False)
            times.append(time.perf_counter() - start)
        speeds[name] = len(texts) / statistics.median(times)
        print(
            f"{name:24s} {speeds[name]:8.2f} texts/s  (median of {args.repeats}: "
            f"{statistics.median(times):.1f} s)"
        )

    single, double = outputs["rationale, single pass"], outputs["rationale, two passes"]
    ratio = speeds["rationale, single pass"] / speeds["rationale, two passes"]
    agreement = np.sum(single * double, axis=1)
    print(f"single-pass / two-pass speed ratio: {ratio:.2f}x")
    print(f"cosine(single-pass, two-pass) embeddings: min {agreement.min():.6f}")


if __name__ == "__main__":
    main()
