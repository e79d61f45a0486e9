"""A direct-mode encoder as a sentence-transformers folder, so any tool that loads
``SentenceTransformer(path)`` embeds text as ``GraceEncoder(mode="direct")`` does.

Only direct mode exports: a rationale has to be generated first, which sentence-transformers
does not do. The one step its stock modules lack is the chat prompt: each text is wrapped in
the model's chat template with the encoder's system prompt, and everything before the user's
text is left out of the mean (``prompt_length`` read by ``Pooling(include_prompt=False)``),
as ``grace.pooling`` leaves it out. Loading needs ``trust_remote_code=True``, because that
module is this package's class (sentence-transformers 6 asks it of every class outside its
own namespace, installed ones included).
"""

from __future__ import annotations

from pathlib import Path

from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

from grace.config import schedule
from grace.constants import RUN_CONFIG_FILE
from grace.encoder import EncoderConfig, GraceEncoder, save_encoder_settings
from grace.files import write_text_atomically
from grace.models import merged
from grace.prompts import SYSTEM_PROMPT, build_prompts, system_prefix_length
from grace.runs import HISTORY_FILE, log_history, saved_config, saved_hash
from grace.validation import validation_curve

#: grace's pooling -> sentence-transformers' pooling mode.
POOLING_MODES = {"mean": "mean", "last": "lasttoken"}


class ChatPromptTransformer(Transformer):
    """sentence-transformers' ``Transformer`` that renders each text as grace's chat prompt
    and marks the tokens before the user's text as the prompt, which pooling leaves out."""

    config_keys = [*Transformer.config_keys, "system_prompt", "max_input_tokens"]

    def __init__(
        self,
        model_name_or_path: str,
        *,
        system_prompt: str = SYSTEM_PROMPT,
        max_input_tokens: int = EncoderConfig.max_input_tokens,
        **kwargs,
    ) -> None:
        super().__init__(model_name_or_path, **kwargs)
        self.system_prompt = system_prompt
        self.max_input_tokens = max_input_tokens
        self.prefix_length = system_prefix_length(self.tokenizer, system_prompt)

    def preprocess(self, inputs, prompt: str | None = None, **kwargs) -> dict:
        if prompt:
            raise ValueError(
                "This model carries its own system prompt; encode without prompt/prompt_name."
            )
        if not all(isinstance(text, str) for text in inputs):
            raise TypeError("This model embeds text: pass strings.")
        texts = [text if text.strip() else "" for text in inputs]
        rendered = build_prompts(self.tokenizer, texts, self.system_prompt, self.max_input_tokens)
        features = super().preprocess(rendered, **kwargs)
        features["prompt_length"] = self.prefix_length
        return features


def export_sentence_transformer(
    encoder: GraceEncoder, output: str | Path, source: str | None = None
) -> Path:
    """Write ``encoder`` (direct mode) to ``output`` as a sentence-transformers folder, with
    its ``encoder_config.json`` and a model card (``README.md``: ``model_card``, which reads
    the run folder ``source`` the model was loaded from, if it is one); returns the folder."""
    config = encoder.config
    if config.mode != "direct":
        raise ValueError(
            f"Only direct-mode encoders export (this one is {config.mode!r}): a rationale must "
            "be generated before it is embedded, which sentence-transformers does not do."
        )
    if config.pooling not in POOLING_MODES:
        raise ValueError(f"No sentence-transformers pooling for {config.pooling!r}.")
    output = Path(output)
    merged(encoder.model).save_pretrained(output)  # LoRA adapters (a bf16 GPU) merged in fp32
    encoder.tokenizer.save_pretrained(output)
    # The rendered template already holds any special tokens the model wants.
    special = encoder.tokenizer.chat_template is None
    transformer = ChatPromptTransformer(
        str(output),
        system_prompt=config.system_prompt,
        max_input_tokens=config.max_input_tokens,
        processing_kwargs={"text": {"add_special_tokens": special}},
        # Plain text in: sentence-transformers would otherwise apply the chat template itself.
        modality_config={"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
        module_output_name="token_embeddings",
    )
    pooling = Pooling(
        transformer.get_embedding_dimension(),
        POOLING_MODES[config.pooling],
        include_prompt=False,
    )
    SentenceTransformer(modules=[transformer, pooling, Normalize()], device="cpu").save(str(output))
    save_encoder_settings(output, config)
    write_text_atomically(output / "README.md", model_card(encoder, output, source))
    return output


def model_card(encoder: GraceEncoder, output: Path, source: str | None = None) -> str:
    """What the exported model is, how it embeds, how it was trained and how it did on
    validation (from a run folder's settings and history), and how to load it."""
    config, model = encoder.config, encoder.model
    name = Path(source).name if source else output.name
    lines = [
        f"# {name}",
        "",
        "A direct-mode text encoder exported by [grace-book](https://arxiv.org/abs/2510.04506) "
        "(a re-implementation of GRACE). Each text is wrapped in the model's chat template with "
        f"the system prompt below; the last-layer states of the {encoder.prefix_length} tokens "
        f"before the text are left out of the {config.pooling} pooling, and the result is "
        f"scaled to unit length ({model.config.hidden_size} dimensions).",
        "",
        f"System prompt: {config.system_prompt!r}",
        "",
    ]
    if source and (settings_hash := saved_hash(source)):
        run = saved_config(source)
        method = {
            "grace": f"GRACE ({run.run.setting}, GRPO)",
            "contrastive": "+CL (contrastive fine-tuning)",
            "simcse": "SimCSE",
        }[run.run.method]
        steps, rate = schedule(run, run.run.method)
        lines += [
            "## Training",
            "",
            f"- base model: `{run.run.model}`",
            f"- method: {method}, {steps}{'' if 'epoch' in steps else ' steps'} at learning "
            f"rate {rate:g}",
            f"- data: `{run.run.data}`",
            f"- settings hash: `{settings_hash}` (the run folder's `{RUN_CONFIG_FILE}` "
            "holds every setting)",
        ]
        history = log_history(source) if (Path(source) / HISTORY_FILE).exists() else []
        curve = validation_curve(history)
        if len(curve["steps"]) > 1:
            first, last = curve["values"][0], curve["values"][-1]
            change, stderr = curve["change"][-1], curve["change_stderr"][-1]
            lines.append(
                f"- {curve['metric']}: {first:.3f} at step {curve['steps'][0]}, {last:.3f} at "
                f"step {curve['steps'][-1]}"
                + (f" (paired change {change:+.3f} ± {stderr:.3f})" if change is not None else "")
            )
        lines.append("")
    lines += [
        "## Use",
        "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "",
        f'model = SentenceTransformer("{output}", trust_remote_code=True)',
        'embeddings = model.encode(["A dog runs in the park."])',
        "```",
        "",
        "`trust_remote_code=True` loads grace's `ChatPromptTransformer` (the package must be "
        "installed). The folder also loads with `grace.encoder.GraceEncoder.from_pretrained`.",
        "",
    ]
    return "\n".join(lines)
