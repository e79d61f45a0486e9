"""Dynamic int8 quantisation for inference: speed and offline-suite scores against fp32.

    python benchmarks/int8.py [--texts 64] [--batch-size 32] [--max-new-tokens 32]

One run, same texts and seed for both: rationale-mode texts/s on Lee sentences, the
direct-mode offline suite (deterministic, so score differences are the quantisation's own),
and how close the direct embeddings stay (cosine).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from grace.data import lee_documents  # noqa: E402
from grace.encoder import GraceEncoder  # noqa: E402
from grace.evaluation import GraceMTEBModel, evaluate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--texts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--suite", default="offline", help="'' skips the suite")
    args = parser.parse_args()

    texts = [doc.split(". ")[0] for doc in lee_documents()][: args.texts]
    print(
        f"model={args.model} texts={len(texts)} batch={args.batch_size} "
        f"max_new_tokens={args.max_new_tokens} threads={torch.get_num_threads()}"
    )
    direct = {}
    for int8 in (False, True):
        name = "int8" if int8 else "fp32"
        encoder = GraceEncoder.from_pretrained(
            args.model, int8=int8, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size
        )
        start = time.perf_counter()
        encoder.encode(texts, show_progress_bar=False)
        seconds = time.perf_counter() - start
        print(f"{name} rationale mode: {len(texts) / seconds:.2f} texts/s ({seconds:.1f} s)")
        direct[name] = GraceEncoder(encoder.model, encoder.tokenizer, mode="direct").encode(texts)
        if args.suite:
            model = GraceMTEBModel(encoder, mode="direct", batch_size=args.batch_size)
            report = evaluate(model, args.suite, label=name).main
            scores = ", ".join(f"{r['task']} {100 * r['score']:.2f}" for r in report["tasks"])
            print(
                f"{name} direct {args.suite} suite in {report['seconds']} s: "
                f"Mean (Task) {report['summary']['Mean (Task)']:.2f} ({scores})"
            )
    cosine = np.sum(direct["fp32"] * direct["int8"], axis=1)
    print(f"cosine(fp32, int8) direct embeddings: min {cosine.min():.4f}, mean {cosine.mean():.4f}")


if __name__ == "__main__":
    main()
