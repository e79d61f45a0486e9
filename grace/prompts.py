"""The policy's prompt: the paper's system message, the chat template, and the prefix to skip.

The embedding pools every token of the chat except the system-message prefix, which is the
same for every text and would pull all embeddings towards one point.
"""

from __future__ import annotations

import warnings

from transformers import PreTrainedTokenizerBase

#: The paper's system message, verbatim. The policy reads it before every text.
SYSTEM_PROMPT = (
    "Read and analyze the following text, then you need to provide your reasoning within "
    "<think></think> tags. Finally, generate a comprehensive understanding of this text."
)


def chat_prompt(tokenizer: PreTrainedTokenizerBase, text: str, system_prompt: str) -> str:
    """The prompt string the policy continues: system + user turns, then the assistant cue.

    Tokenizers without a chat template get a plain ``system\\n\\ntext\\n\\n`` layout.
    """
    if tokenizer.chat_template is None:
        return f"{system_prompt}\n\n{text}\n\n" if system_prompt else f"{text}\n\n"
    messages = [{"role": "user", "content": text}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def prompt_token_ids(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """Token ids of a rendered prompt; the template already holds any special tokens it wants."""
    return tokenizer(prompt, add_special_tokens=tokenizer.chat_template is None)["input_ids"]


def system_prefix_length(tokenizer: PreTrainedTokenizerBase, system_prompt: str) -> int:
    """How many leading tokens of every prompt belong to the system message.

    Where the template renders the system turn on its own, and that rendering is the start
    of every full prompt (ChatML, Llama 3), its token count is the answer: 37 for SmolLM2 with
    the paper's prompt, as in the reference. Otherwise (no template, or a template that folds
    the system text into the user turn) everything before the user's text is skipped: two
    prompts that differ only in their user text share exactly those tokens. A template that
    drops the system message gives 0.
    """
    first = prompt_token_ids(tokenizer, chat_prompt(tokenizer, "Alpha sentinel", system_prompt))
    second = prompt_token_ids(tokenizer, chat_prompt(tokenizer, "Zulu sentinel", system_prompt))
    before_text = 0
    for a, b in zip(first, second, strict=False):
        if a != b:
            break
        before_text += 1
    if tokenizer.chat_template is None or not system_prompt:
        return before_text
    try:
        system_turn = tokenizer.apply_chat_template(
            [{"role": "system", "content": system_prompt}], tokenize=False
        )
    except Exception:  # some templates refuse a conversation without a user turn
        return before_text
    system_ids = prompt_token_ids(tokenizer, system_turn)
    if len(system_ids) <= before_text and first[: len(system_ids)] == system_ids:
        return len(system_ids)
    return before_text


def truncate_text(tokenizer: PreTrainedTokenizerBase, text: str, max_tokens: int) -> str:
    """Cut ``text`` to at most ``max_tokens`` tokens of its own (template not counted)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return text
    return tokenizer.decode(ids[:max_tokens])


def build_prompts(
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    system_prompt: str,
    max_input_tokens: int,
) -> list[str]:
    """Chat prompts for ``texts``, each text cut to ``max_input_tokens``; warns once if any was."""
    cut = [truncate_text(tokenizer, text, max_input_tokens) for text in texts]
    n_cut = sum(a != b for a, b in zip(cut, texts, strict=True))
    if n_cut:
        warnings.warn(
            f"{n_cut} of {len(texts)} texts exceed max_input_tokens={max_input_tokens} and were "
            "truncated.",
            stacklevel=2,
        )
    return [chat_prompt(tokenizer, text, system_prompt) for text in cut]
