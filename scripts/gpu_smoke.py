"""A short check of the CUDA code paths with the tiny random model (nothing is downloaded).

GRPO for 2 steps with the length penalty on, LoRA and full fine-tuning, bf16 mixed precision;
then a direct and a rationale encode on the GPU. Prints one line per check and the dtypes
seen; exits 0 when every check passed. Without a GPU it says so and exits 0 (skipped).

    python scripts/gpu_smoke.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from grace.config import load_config  # noqa: E402
from grace.encoder import GraceEncoder  # noqa: E402
from grace.train import train  # noqa: E402


def check_training(label: str, overrides: list[str]) -> None:
    with tempfile.TemporaryDirectory() as output:
        config = load_config(
            "tiny",
            [
                f"output_dir={output}",
                "max_steps=2",
                "length_penalty=-1.0",  # the penalty path builds a mask: it must follow CUDA
                "bf16=true",
                *overrides,
            ],
        )
        start = time.perf_counter()
        trainer = train(config)
        model = trainer.model
        weights = {p.dtype for p in model.parameters() if p.requires_grad}
        devices = {p.device.type for p in model.parameters()}
        assert devices == {"cuda"}, devices
        print(
            f"ok  GRPO {label}: {trainer.state.global_step} steps in "
            f"{time.perf_counter() - start:.1f} s; trained weights {sorted(map(str, weights))}"
        )


def check_encoding() -> None:
    texts = ["A dog runs in the park.", "Stocks fell on Monday.", "hi"]
    for mode in ("direct", "rationale"):
        encoder = GraceEncoder.from_pretrained("tiny-random", mode=mode, max_new_tokens=8)
        assert encoder.model.device.type == "cuda"
        embeddings = encoder.encode(texts)
        norms = (embeddings**2).sum(axis=1) ** 0.5
        assert embeddings.shape[0] == 3 and abs(norms - 1).max() < 1e-3, norms
        print(f"ok  encode {mode}: {embeddings.shape}, model dtype {encoder.model.dtype}")


def main() -> int:
    if not torch.cuda.is_available():
        print("skipped: no CUDA device here")
        return 0
    print(f"device: {torch.cuda.get_device_name()} (bf16: {torch.cuda.is_bf16_supported()})")
    check_training("full fine-tuning, fp32 weights + bf16 autocast", [])
    check_training("LoRA, bf16 base", ["lora=true", "adaptation.dtype=bfloat16"])
    check_encoding()
    print("all GPU checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
