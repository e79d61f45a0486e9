"""The paper's baselines: contrastive fine-tuning (+CL) and SimCSE, on the same backbone.

Both train the LLM as a plain encoder: direct-mode embeddings (the chat prompt, no
rationale, mean-pooled after the system prefix, exactly as ``GraceEncoder`` in direct mode)
and an InfoNCE loss. +CL uses (query, positive, negative) triples with in-batch and hard
negatives; SimCSE encodes each sentence twice with dropout on, and the two views are
positives. transformers' ``Trainer`` gives checkpoints, resuming and logging.
"""

from __future__ import annotations

import zlib

import datasets
import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase, Trainer, TrainingArguments

from grace.config import TrainConfig
from grace.models import load_model
from grace.prompts import build_prompts, system_prefix_length
from grace.rationale import pooled_states, tokenize_prompts


def info_nce(
    anchors: torch.Tensor,
    candidates: torch.Tensor,
    temperature: float,
    anchor_keys: torch.Tensor | None = None,
    candidate_keys: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy of each anchor i against all candidates, candidate i being its positive.

    With keys (one id per text), a candidate j != i holding the same text as anchor i's
    positive is a false negative and is left out: with 112 training plots, about half of the
    random batches of 8 hold some plot twice.
    """
    logits = anchors @ candidates.T / temperature
    rows = torch.arange(anchors.shape[0], device=anchors.device)
    if anchor_keys is not None and candidate_keys is not None:
        same = (anchor_keys[:, None] == candidate_keys[None, :]).to(logits.device)
        same[rows, rows] = False
        logits = logits.masked_fill(same, float("-inf"))
    return F.cross_entropy(logits, rows)


def text_keys(texts: list[str]) -> torch.Tensor:
    """One integer per text, equal for equal texts (stable across processes). A collator's
    output: built on the CPU, moved with the batch by the Trainer."""
    keys = [zlib.crc32(text.encode()) for text in texts]
    return torch.tensor(keys, dtype=torch.long, device="cpu")


class PromptCollator:
    """Batches of dataset rows -> tokenized chat prompts, one tensor pair per text field."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, config: TrainConfig, fields):
        self.tokenizer, self.config, self.fields = tokenizer, config, fields

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = {}
        for field in self.fields:
            prompts = build_prompts(
                self.tokenizer,
                [row[field] for row in rows],
                self.config.policy.system_prompt,
                self.config.policy.max_prompt_tokens,
            )
            ids, mask = tokenize_prompts(self.tokenizer, prompts, torch.device("cpu"))
            batch[f"{field}_ids"], batch[f"{field}_mask"] = ids, mask
            batch[f"{field}_key"] = text_keys([row[field] for row in rows])
        return batch


class ContrastiveTrainer(Trainer):
    """InfoNCE on direct-mode embeddings; ``simcse`` encodes the same text twice."""

    def __init__(self, *args, grace_config: TrainConfig, prefix_length: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.grace_config = grace_config
        self.prefix_length = prefix_length
        # The system prefix runs once per batch, except for SimCSE: its noise is dropout, and
        # a shared prefix would give every row of the batch the same draw there.
        self.share_prefix = grace_config.run.method != "simcse"

    def embed(self, model, inputs: dict, field: str) -> torch.Tensor:
        ids, mask = inputs[f"{field}_ids"], inputs[f"{field}_mask"]
        return pooled_states(model, ids, mask, self.prefix_length, share_prefix=self.share_prefix)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        temperature = self.grace_config.baselines.temperature
        keys = inputs["text_key"]
        if self.grace_config.run.method == "simcse":
            first, second = self.embed(model, inputs, "text"), self.embed(model, inputs, "text")
            loss = info_nce(first, second, temperature, keys, keys)
        else:
            query = self.embed(model, inputs, "query")
            documents = torch.cat(
                [self.embed(model, inputs, "text"), self.embed(model, inputs, "negative")]
            )
            candidate_keys = torch.cat([keys, inputs["negative_key"]])
            loss = info_nce(query, documents, temperature, keys, candidate_keys)
        return (loss, {}) if return_outputs else loss


def set_attention_dropout(model: torch.nn.Module, rate: float) -> None:
    """SimCSE's noise: instruct LLMs ship with dropout off, so switch attention dropout on.

    Only the modules change: the saved config keeps the model's own rate, so a SimCSE
    checkpoint loads (and embeds) without dropout.
    """
    for module in model.modules():
        if hasattr(module, "attention_dropout"):
            module.attention_dropout = rate


def contrastive_arguments(config: TrainConfig) -> TrainingArguments:
    """The shared arguments, with the baselines' own steps and rate where the profile sets them."""
    arguments = config.trainer_arguments()
    baselines = config.baselines
    steps = baselines.steps_for(config.run.method)
    if steps is not None:
        arguments["max_steps"] = steps
    if baselines.lr is not None:
        arguments["learning_rate"] = baselines.lr
    arguments |= dict(
        per_device_train_batch_size=config.baselines.batch_size,
        dataloader_drop_last=True,  # in-batch negatives want full batches
    )
    return config.build_arguments(TrainingArguments, arguments)


def build_contrastive_trainer(config: TrainConfig) -> ContrastiveTrainer:
    """+CL (``method: contrastive``) or SimCSE (``method: simcse``), ready to train."""
    model, tokenizer = load_model(config.run.model, dtype=config.adaptation.torch_dtype)
    if config.adaptation.lora:
        from peft import get_peft_model

        model = get_peft_model(model, config.peft_config(model))
    if config.run.method == "simcse":
        set_attention_dropout(model, config.baselines.simcse_dropout)
        fields = ("text",)
    else:
        fields = ("query", "text", "negative")
    rows = config.training_rows(tokenizer)
    return ContrastiveTrainer(
        model=model,
        args=contrastive_arguments(config),
        train_dataset=datasets.Dataset.from_list(rows),
        data_collator=PromptCollator(tokenizer, config, fields),
        processing_class=tokenizer,
        grace_config=config,
        prefix_length=system_prefix_length(tokenizer, config.policy.system_prompt),
    )
