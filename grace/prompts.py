"""The policy's prompt: the paper's system message, the chat template, and the prefix to skip.

The embedding pools every token of the chat from the user's text on; what comes before it (the
system turn and the user turn's header) is the same for every text and would pull all
embeddings towards one point.
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


#: The user text the prefix is measured with; any text works, it only has to be found.
SENTINEL = "GRACE-SENTINEL-USER-TEXT"


def system_prefix_length(tokenizer: PreTrainedTokenizerBase, system_prompt: str) -> int:
    """How many leading tokens of every prompt come before the user's text.

    As in the reference, the prompt is rendered around a sentinel user string and every token
    before the sentinel is excluded from pooling: the system turn *and* the user turn's header,
    which are the same for every text (40 tokens for SmolLM2 under ChatML with the paper's
    prompt: the 37-token system turn plus ``<|im_start|>user\\n``). A token that straddles the
    sentinel's first character counts as the text's.
    """
    prompt = chat_prompt(tokenizer, SENTINEL, system_prompt)
    start = prompt.index(SENTINEL)
    ids = prompt_token_ids(tokenizer, prompt[:start])
    whole = prompt_token_ids(tokenizer, prompt)
    length = len(ids)
    while length and whole[:length] != ids[:length]:  # the boundary merged into a token
        length -= 1
    return length


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
