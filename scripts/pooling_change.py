"""What the reference's pooling changes: the user turn's header left out of every embedding.

    python scripts/pooling_change.py

The reference pools from the user's text on; this package used to start three tokens earlier
(after the system turn, so ``<|im_start|>user\\n`` was pooled into every text). On the study's
validation split (``cpu-long``, untrained SmolLM2), each query scored with the old and the
new rule, paired: direct embeddings, greedy rationales and one sampled draw (the rationales
are the same under both rules; only what is pooled differs). Writes
``results/pooling/validation.json``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


from grace.config import load_config  # noqa: E402
from grace.diagnostics import mean_pairwise_cosine  # noqa: E402
from grace.encoder import GraceEncoder, Variant  # noqa: E402
from grace.prompts import prompt_token_ids  # noqa: E402
from grace.validation import (  # noqa: E402
    clustered_stderr,
    mean_and_stderr,
    query_scores,
    run_validation_set,
    validation_encoder,
)

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "results" / "pooling" / "validation.json"


def system_turn_length(encoder: GraceEncoder) -> int:
    """The old rule: the tokens of the system turn rendered alone."""
    turn = encoder.tokenizer.apply_chat_template(
        [{"role": "system", "content": encoder.config.system_prompt}], tokenize=False
    )
    return len(prompt_token_ids(encoder.tokenizer, turn))


def main() -> None:
    config = load_config("cpu-long")
    data = run_validation_set(config.validation)
    tokens = config.policy.max_completion_length
    variants = {
        "direct": Variant(0),
        f"greedy rationale ({tokens} tokens)": Variant(tokens, 0.0),
        f"sampled rationale ({tokens} tokens, T = 1, draw 0)": Variant(tokens, 1.0),
    }
    texts = data.queries + data.plots
    count = len(data.queries)
    with tempfile.TemporaryDirectory() as cache:  # the second rule reads the first's rationales
        settings = vars(validation_encoder(config)) | {"cache_dir": cache}
        encoder = GraceEncoder.from_pretrained(config.run.model, **settings)
        rules = {
            "system turn (old)": system_turn_length(encoder),
            "reference": encoder.prefix_length,
        }
        scores, spread, seconds = {}, {}, {}
        for rule, length in rules.items():
            encoder.prefix_length = length
            started = time.perf_counter()
            encoded = encoder.encode_variants(texts, list(variants.values()))
            seconds[rule] = round(time.perf_counter() - started, 1)
            for name, variant in variants.items():
                embeddings = encoded.embeddings[variant]
                scores[rule, name] = query_scores(embeddings[:count], embeddings[count:], data)
                spread[rule, name] = mean_pairwise_cosine(embeddings)
    old, new = rules
    rows = {}
    for name in variants:
        before, after = scores[old, name]["mrr"], scores[new, name]["mrr"]
        change = after - before
        rows[name] = {
            "mrr": {old: mean_and_stderr(before), new: mean_and_stderr(after)},
            "change": mean_and_stderr(change)[0],
            "change_stderr": mean_and_stderr(change)[1],
            "change_stderr_clustered": clustered_stderr(change, data.clusters),
            "mean_pairwise_cosine": {old: spread[old, name], new: spread[new, name]},
        }
        print(f"{name}: {rows[name]}")
    record = {
        "profile": "cpu-long",
        "model": config.run.model,
        "metric": "validation mrr (review -> plot, held-out reviews of training movies)",
        "queries": count,
        "movies": len(set(data.clusters)),
        "excluded_tokens": rules,
        "rows": rows,
        "seconds": seconds,
        "recorded": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
