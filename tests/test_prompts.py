import pytest

from grace.models import build_tiny_tokenizer
from grace.prompts import (
    SYSTEM_PROMPT,
    build_prompts,
    chat_prompt,
    prompt_token_ids,
    system_prefix_length,
    truncate_text,
)


def test_prompt_holds_system_user_and_assistant_cue(tiny):
    _, tokenizer = tiny
    prompt = chat_prompt(tokenizer, "Some text.", SYSTEM_PROMPT)
    assert prompt == (
        f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n"
        "<|im_start|>user\nSome text.<|im_end|>\n<|im_start|>assistant\n"
    )


def test_prefix_is_everything_before_the_user_text_on_chatml(tiny):
    _, tokenizer = tiny
    # Byte-level: <|im_start|>, a token per byte of "system\n" + prompt, <|im_end|>, "\n",
    # then the user turn's header: <|im_start|> and a token per byte of "user\n".
    expected = 1 + len(("system\n" + SYSTEM_PROMPT).encode()) + 1 + 1 + 1 + len(b"user\n")
    assert system_prefix_length(tokenizer, SYSTEM_PROMPT) == expected
    # ... and every prompt starts with exactly those tokens.
    a = prompt_token_ids(tokenizer, chat_prompt(tokenizer, "one", SYSTEM_PROMPT))
    b = prompt_token_ids(tokenizer, chat_prompt(tokenizer, "two words", SYSTEM_PROMPT))
    assert a[:expected] == b[:expected]


def test_template_without_system_prefix_gives_zero():
    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = "{{ messages[-1]['content'] }}"
    assert system_prefix_length(tokenizer, SYSTEM_PROMPT) == 0


def test_template_folding_system_into_user_turn_skips_up_to_user_text():
    tokenizer = build_tiny_tokenizer()
    # Gemma-like: the system text is prepended inside the user turn.
    tokenizer.chat_template = (
        "<|im_start|>user\n{{ messages[0]['content'] }}\n\n{{ messages[1]['content'] }}"
        "<|im_end|>\n{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    expected = 1 + len(f"user\n{SYSTEM_PROMPT}\n\n".encode())
    assert system_prefix_length(tokenizer, SYSTEM_PROMPT) == expected


def test_plain_fallback_without_chat_template():
    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = None
    assert chat_prompt(tokenizer, "Text.", "Sys.") == "Sys.\n\nText.\n\n"
    assert system_prefix_length(tokenizer, "Sys.") == len(b"Sys.\n\n")


def test_long_texts_are_truncated_with_one_warning(tiny):
    _, tokenizer = tiny
    texts = ["x" * 50, "y" * 50, "short"]
    with pytest.warns(UserWarning, match="2 of 3 texts exceed max_input_tokens=10") as record:
        prompts = build_prompts(tokenizer, texts, SYSTEM_PROMPT, max_input_tokens=10)
    assert len(record) == 1
    assert "x" * 10 + "<|im_end|>" in prompts[0] and "x" * 11 not in prompts[0]
    assert "short" in prompts[2]
    assert truncate_text(tokenizer, "short", 10) == "short"


@pytest.mark.smollm2
def test_smollm2_prefix_is_40_tokens_found_by_a_sentinel_as_the_reference_does(smollm2):
    _, tokenizer = smollm2
    # The reference's way, written out: render a sentinel user text, tokenize the prompt, and
    # find where the sentinel's tokens begin.
    sentinel = "Sentinel user string"
    ids = prompt_token_ids(tokenizer, chat_prompt(tokenizer, sentinel, SYSTEM_PROMPT))
    own = tokenizer(sentinel, add_special_tokens=False)["input_ids"]
    start = next(i for i in range(len(ids)) if ids[i : i + len(own)] == own)
    assert start == 40
    assert system_prefix_length(tokenizer, SYSTEM_PROMPT) == 40
    assert tokenizer.decode(ids[37:40]) == "<|im_start|>user\n"
