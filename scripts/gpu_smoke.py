"""A short, real check of the training and encoding paths on one device (nothing is downloaded).

For each path it trains 2 steps and asserts what a broken step would get wrong: the device of
every weight, the dtype of the trained weights (fp32 masters; LoRA adapters fp32 on a bf16
base), a finite loss, weights that changed (the length-penalty path excepted: a random model
never ends a rationale, so every reward is the penalty), and a saved folder that loads back
(LoRA: adapters on the base) and embeds as the model that trained. Paths: GRPO with full
fine-tuning in fp32 (logging to tensorboard when it is installed), with bf16 autocast where the
device computes bf16 natively, with LoRA on a bf16 base and gradient checkpointing (as the
gpu profile trains), on CUDA with LoRA on an fp16 base and fp16 autocast (as the colab profile
trains on a T4), with the length penalty; +CL and SimCSE; then direct and
rationale encoding and one offline mteb task (LeeSTS); last, one run trained by two processes
under torchrun (two GPUs on CUDA, two CPU processes with gloo otherwise): one finished folder,
and each step learns from both processes' prompts. It prints the seconds (set-up included) and
the peak memory of each path.

    python scripts/gpu_smoke.py                  # CUDA; exits 1 without a CUDA device
    python scripts/gpu_smoke.py --device cpu     # the same checks on the CPU (CI runs this)
    python scripts/gpu_smoke.py --shapes colab   # Qwen2-shaped random models of the profile's
                                                 # model width (2 layers), for memory and speed
    python scripts/gpu_smoke.py --shapes smollm2 # the real SmolLM2-135M-Instruct (its own
                                                 # tokenizer and chat template)

``--shapes tiny`` (the default) uses the tiny random model; ``colab``/``gpu`` build a random
Qwen2-style model with the width of the profile's model (Qwen2.5-0.5B / 1.5B) and the profile's
sequence lengths.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
if "--device" in sys.argv[:-1] and sys.argv[sys.argv.index("--device") + 1] == "cpu":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch starts CUDA: the Trainer follows it

import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from grace.config import load_config  # noqa: E402
from grace.encoder import GraceEncoder  # noqa: E402
from grace.evaluation import evaluate  # noqa: E402
from grace.models import (  # noqa: E402
    ADAPTER_CONFIG,
    SMOLLM2,
    TINY_RANDOM,
    build_tiny_tokenizer,
    has_native_bf16,
    load_model,
)
from grace.runs import is_finished  # noqa: E402
from grace.train import train  # noqa: E402
from grace.validation import DETAILS, prompts_per_step  # noqa: E402

#: The widths of the colab and gpu profiles' models (Qwen2.5-0.5B- and 1.5B-Instruct).
WIDTHS = {
    "colab": dict(hidden_size=896, intermediate_size=4864, num_attention_heads=14),
    "gpu": dict(hidden_size=1536, intermediate_size=8960, num_attention_heads=12),
}


def qwen2_shaped(shapes: str, folder: str) -> str:
    """A random 2-layer model with the width and vocabulary size of the ``shapes`` profile's
    model, saved in ``folder`` with the tiny tokenizer (token ids stay below its vocabulary)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_tiny_tokenizer()
    config = Qwen2Config(
        vocab_size=151_936,
        num_hidden_layers=2,
        num_key_value_heads=2,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        **WIDTHS[shapes],
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB (CUDA, peak)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (process, peak)"


def check_path(
    label: str,
    base: list[str],
    overrides: list[str],
    device: torch.device,
    changes: bool = True,
) -> None:
    """Train 2 steps of one path and assert device, dtypes, a finite loss and (``changes``)
    weights that changed."""
    with tempfile.TemporaryDirectory() as output:
        config = load_config("tiny", [*base, f"output_dir={output}", *overrides])
        seen: dict = {}

        class Check(TrainerCallback):
            """The trainable weights as training starts and ends."""

            def on_train_begin(self, args, state, control, model=None, **kwargs):
                seen["before"] = {
                    k: w.detach().float().clone()
                    for k, w in model.named_parameters()
                    if w.requires_grad
                }

            def on_train_end(self, args, state, control, model=None, **kwargs):
                seen["model"] = model
                seen["devices"] = {p.device.type for p in model.parameters()}
                seen["trained"] = {p.dtype for p in model.parameters() if p.requires_grad}
                seen["frozen"] = {p.dtype for p in model.parameters() if not p.requires_grad}
                seen["moved"] = max(
                    float((w.detach().float() - seen["before"][k]).abs().max())
                    for k, w in model.named_parameters()
                    if k in seen["before"]
                )

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        trainer = train(config, callbacks=[Check()])
        seconds = time.perf_counter() - start
        assert seen["devices"] == {device.type}, f"{label}: weights on {seen['devices']}"
        assert seen["trained"] == {torch.float32}, f"{label}: trained in {seen['trained']}"
        if config.adaptation.lora and config.adaptation.dtype != "float32":
            base_dtype = config.adaptation.torch_dtype
            assert seen["frozen"] == {base_dtype}, f"{label}: base in {seen['frozen']}"
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        assert losses and all(math.isfinite(x) for x in losses), f"{label}: losses {losses}"
        assert seen["moved"] > 0 or not changes, f"{label}: no trained weight changed"
        dtype = config.adaptation.torch_dtype
        reloaded = check_reload(label, seen["model"], output, dtype, device)
        if "report_to=tensorboard" in overrides:
            events = list(Path(output).rglob("events.out.tfevents*"))
            assert events, f"{label}: tensorboard wrote no event file"
            reloaded += ", tensorboard events written"
        print(
            f"ok  {label}: {trainer.state.global_step} steps in {seconds:.1f} s with set-up, "
            f"loss {losses[-1]:+.4f}, largest weight change {seen['moved']:.2e}, "
            f"{peak_memory(device)}; {reloaded}"
        )


def check_reload(label: str, trained, folder: str, dtype: torch.dtype, device) -> str:
    """Load the saved folder as a user would, at the run's precision: every weight must be the
    trained one (LoRA: the adapters back on the base). Returns what was loaded."""
    saved, _ = load_model(folder, device=str(device), dtype=dtype)
    ours, theirs = dict(saved.named_parameters()), dict(trained.named_parameters())
    assert ours.keys() == theirs.keys(), f"{label}: the saved model has other weights"
    differ = [name for name in theirs if not torch.equal(ours[name], theirs[name])]
    assert not differ, f"{label}: {len(differ)} saved weights differ, first {differ[0]}"
    kind = "adapters on the base" if (Path(folder) / ADAPTER_CONFIG).is_file() else "a model"
    return f"reloaded as {kind}, every weight equal"


def check_encoding(model: str, device: torch.device) -> None:
    texts = ["A dog runs in the park.", "Stocks fell on Monday.", "hi"]
    for mode in ("direct", "rationale"):
        encoder = GraceEncoder.from_pretrained(
            model, device=str(device), mode=mode, max_new_tokens=8
        )
        assert encoder.model.device.type == device.type
        embeddings = encoder.encode(texts)
        norms = (embeddings**2).sum(axis=1) ** 0.5
        assert embeddings.shape[0] == 3 and abs(norms - 1).max() < 1e-3, norms
        assert all(math.isfinite(x) for x in embeddings.flatten()), "non-finite embeddings"
        print(f"ok  encode {mode}: {embeddings.shape}, model dtype {encoder.model.dtype}")
    report = evaluate(model, "LeeSTS", device=str(device), mode="direct").main
    score = report["tasks"][0]["score"]
    assert math.isfinite(score), f"mteb LeeSTS scored {score}"
    print(f"ok  mteb LeeSTS (direct): Spearman {score:+.3f} in {report['seconds']:.1f} s")


def check_two_processes(base: list[str], device: torch.device) -> None:
    """One GRPO run trained by two processes under torchrun, as `accelerate launch` starts them:
    it must finish one folder, and each step must count both processes' prompts."""
    if device.type == "cuda" and torch.cuda.device_count() < 2:
        print("--  one CUDA device: two processes not checked (they need a GPU each)")
        return
    with tempfile.TemporaryDirectory() as output:
        settings = [*base, f"output_dir={output}"]
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
        command += ["-m", "grace.cli", "train", "--config", "tiny"]
        command += [part for setting in settings for part in ("--set", setting)]
        env = dict(os.environ)
        if device.type == "cpu":
            env["ACCELERATE_USE_CPU"] = "1"  # what `accelerate launch --cpu` sets
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - start
        assert done.returncode == 0, f"two processes: exit {done.returncode}\n{done.stderr[-3000:]}"
        config = load_config("tiny", settings)
        assert is_finished(output, config), "two processes: the run did not finish its folder"
        points = [json.loads(line) for line in (Path(output) / DETAILS).read_text().splitlines()]
        seen, alone = points[-1]["prompts_seen"], points[-1]["step"] * prompts_per_step(config)
        assert seen == 2 * alone, f"two processes: {seen} prompts seen, expected {2 * alone}"
        print(
            f"ok  GRPO, two processes: {points[-1]['step']} steps in {seconds:.1f} s with "
            f"set-up, {seen} prompts seen (twice one process's {alone}), one finished folder"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--shapes", choices=("tiny", "smollm2", *WIDTHS), default="tiny")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        # A check asked for CUDA that finds none has checked nothing: it must not pass.
        print(
            "error: --device cuda but torch sees no CUDA device (torch.cuda.is_available() is "
            "False: a CPU build of torch, or no GPU visible); run with --device cpu to check "
            "the CPU paths.",
            file=sys.stderr,
        )
        return 1
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}; native bf16: {has_native_bf16(device)}")
    with tempfile.TemporaryDirectory() as folder:
        named = {"tiny": TINY_RANDOM, "smollm2": SMOLLM2}
        model = named.get(args.shapes) or qwen2_shaped(args.shapes, folder)
        lengths = load_config(args.shapes).policy if args.shapes in WIDTHS else None
        base = [f"run.model={model}", "max_steps=2"]
        if lengths is not None:  # the profile's sequence lengths, capped for a smoke check
            base += [
                f"policy.max_prompt_tokens={min(lengths.max_prompt_tokens, 256)}",
                f"policy.max_completion_length={min(lengths.max_completion_length, 64)}",
            ]
        logger = ["report_to=tensorboard"] if find_spec("tensorboard") else []
        if not logger:
            print("--  tensorboard is not installed (the gpu extra has it): not checked")
        check_path("GRPO, full fine-tuning, fp32", base, logger, device)
        # A random model never ends a rationale: every reward is the penalty, no advantage, no
        # change; the path (a mask built on the device) must still run.
        penalty = ["length_penalty=-1.0"]
        check_path("GRPO with the length penalty", base, penalty, device, changes=False)
        if has_native_bf16(device):
            label = "GRPO, full fine-tuning, fp32 weights + bf16 autocast"
            check_path(label, base, ["bf16=true"], device)
        lora = ["lora=true", "adaptation.dtype=bfloat16", "gradient_checkpointing=true"]
        check_path("GRPO, LoRA on a bf16 base, gradient checkpointing", base, lora, device)
        if device.type == "cuda":  # the colab profile's recipe (a T4 has no native bf16)
            fp16 = ["lora=true", "adaptation.dtype=float16", "fp16=true"]
            check_path("GRPO, LoRA on an fp16 base + fp16 autocast", base, fp16, device)
        for method in ("contrastive", "simcse"):
            method_settings = [f"run.method={method}", "baselines.steps=2"]
            check_path(f"{method}, fp32", base, method_settings, device)
        check_encoding(model, device)
        check_two_processes(base, device)
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
