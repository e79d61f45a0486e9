"""Is the model still a language model? Perplexity and a few instructions, before and after.

The paper's claim: contrastive fine-tuning turns the LLM into an encoder that no longer
writes, while GRACE, trained through its own generations, keeps that ability. Two automatic
measures: perplexity on held-out prose (the 50 Lee evaluation documents, never trained on)
and fixed instructions with a known answer, judged by whether the greedy reply gives it and
no wrong answer beside it.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from grace.data import lee_documents
from grace.prompts import chat_prompt
from grace.rationale import SamplingConfig, generate_rationales

# (instruction, accepted answers, wrong answers): a reply passes when it contains an accepted
# answer as a whole word and none of the wrong ones ("Jupiter, but it's actually Saturn" fails).
INSTRUCTIONS = [
    ("What is the capital of France? Answer in one word.", ["paris"],
     ["lyon", "marseille", "london", "berlin", "rome", "madrid"]),
    ("What is 12 plus 7? Reply with the number only.", ["19", "nineteen"],
     ["18", "20", "21", "84", "5"]),
    ("How do you say 'thank you' in Spanish?", ["gracias"], ["de nada", "por favor"]),
    ("Which planet is the largest in our solar system?", ["jupiter"],
     ["saturn", "neptune", "uranus", "earth", "mars", "venus", "mercury"]),
    ("What colour is the sky on a clear day?", ["blue"], ["grey", "gray", "red", "green"]),
    ("Give the opposite of the word 'hot'.", ["cold"], ["warm"]),
    ("How many days are there in a week?", ["7", "seven"],
     ["5", "6", "8", "five", "six", "eight"]),
    ("Who wrote the play Romeo and Juliet?", ["shakespeare"], ["marlowe", "dickens"]),
    ("Which gas do plants take in from the air to make food?", ["carbon dioxide", "co2"],
     ["nitrogen"]),
    ("What is the freezing point of water in degrees Celsius?", ["0", "zero"],
     ["100", "10", "-10"]),
]  # fmt: skip


@torch.no_grad()
def perplexity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    max_tokens: int = 128,
    batch_size: int = 8,
) -> float:
    """exp(mean next-token loss) over all tokens of ``texts`` (each cut to ``max_tokens``)."""
    total_loss, total_tokens = 0.0, 0
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[start : start + batch_size],
            truncation=True,
            max_length=max_tokens,
            padding=True,
            return_tensors="pt",
        ).to(model.device)
        mask = batch["attention_mask"]
        position_ids = (mask.long().cumsum(dim=1) - 1).clamp(min=0)
        logits = model(**batch, position_ids=position_ids).logits[:, :-1].float()
        targets = batch["input_ids"][:, 1:]
        keep = mask[:, 1:].bool()
        losses = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), targets, reduction="none"
        )
        total_loss += losses[keep].sum().item()
        total_tokens += int(keep.sum())
    return math.exp(total_loss / total_tokens)


def answer_instructions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    instructions: list[tuple[str, list[str], list[str]]] = INSTRUCTIONS,
    max_new_tokens: int = 40,
) -> list[dict]:
    """Greedy replies (the model's own chat template, no GRACE system prompt), each judged."""
    prompts = [chat_prompt(tokenizer, question, "") for question, _, _ in instructions]
    replies = generate_rationales(
        model, tokenizer, prompts, SamplingConfig(temperature=0, max_new_tokens=max_new_tokens)
    ).texts
    return [
        {
            "instruction": question,
            "reply": reply.strip(),
            "passed": judge(reply, answers, wrong),
        }
        for (question, answers, wrong), reply in zip(instructions, replies, strict=True)
    ]


def contains_answer(reply: str, answers: list[str]) -> bool:
    """True when one of ``answers`` appears in ``reply`` as a whole word (any case)."""
    return any(re.search(rf"\b{re.escape(answer)}\b", reply.lower()) for answer in answers)


def judge(reply: str, answers: list[str], wrong: list[str]) -> bool:
    """A right answer, and no wrong one beside it (hedged replies fail)."""
    return contains_answer(reply, answers) and not contains_answer(reply, wrong)


def generative_check(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> dict:
    """Perplexity on the Lee evaluation documents and the instruction pass rate, with replies."""
    replies = answer_instructions(model, tokenizer)
    return {
        "perplexity": perplexity(model, tokenizer, lee_documents(background=False)),
        "instructions_passed": sum(r["passed"] for r in replies) / len(replies),
        "replies": replies,
    }


def cached_generative_checks(models: dict[str, str], path: str | Path) -> dict[str, dict]:
    """``generative_check`` of each model (label -> name or run folder), kept in ``path`` under
    the model's identity (``grace.runs.model_identity``): a retrained run is checked again, an
    unchanged one is read back."""
    from grace.models import load_model
    from grace.runs import model_identity

    path = Path(path)
    saved = json.loads(path.read_text()) if path.exists() else {}
    for label, model in models.items():
        identity = model_identity(model)
        if saved.get(label, {}).get("model") != identity:
            saved[label] = generative_check(*load_model(model)) | {"model": identity}
            path.write_text(json.dumps(saved, indent=1))
    return {label: saved[label] for label in models}
