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

from grace.encoder import EncoderConfig, GraceEncoder, save_encoder_settings
from grace.prompts import SYSTEM_PROMPT, build_prompts, system_prefix_length

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


def export_sentence_transformer(encoder: GraceEncoder, output: str | Path) -> Path:
    """Write ``encoder`` (direct mode) to ``output`` as a sentence-transformers folder, with
    its ``encoder_config.json``; returns the folder."""
    config = encoder.config
    if config.mode != "direct":
        raise ValueError(
            f"Only direct-mode encoders export (this one is {config.mode!r}): a rationale must "
            "be generated before it is embedded, which sentence-transformers does not do."
        )
    if config.pooling not in POOLING_MODES:
        raise ValueError(f"No sentence-transformers pooling for {config.pooling!r}.")
    output = Path(output)
    encoder.model.save_pretrained(output)
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
    return output
