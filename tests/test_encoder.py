import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

import grace.rationale as generation
from grace.encoder import EncoderConfig, GraceEncoder
from grace.prompts import build_prompts


def test_direct_mode_gives_unit_float32_rows(tiny, texts):
    encoder = GraceEncoder(*tiny, mode="direct")
    embeddings = encoder.encode(texts)
    assert embeddings.shape == (len(texts), tiny[0].config.hidden_size)
    assert embeddings.dtype == np.float32
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert encoder.encode(texts[0]).shape == (tiny[0].config.hidden_size,)
    assert encoder.generated == 0


@pytest.mark.parametrize("mode", ["direct", "rationale"])
def test_same_text_alone_or_in_a_padded_batch(tiny, texts, mode):
    # Greedy rationales, so that the only difference is batching and padding.
    encoder = GraceEncoder(*tiny, mode=mode, temperature=0.0, max_new_tokens=8, batch_size=3)
    together = encoder.encode(texts)
    alone = np.stack([encoder.encode([text]) for text in texts])[:, 0]
    assert np.allclose(together, alone, atol=1e-5)


def test_results_come_back_in_input_order(tiny, texts):
    encoder = GraceEncoder(*tiny, mode="direct", batch_size=2)
    forward = encoder.encode(texts)
    backward = encoder.encode(texts[::-1])
    assert np.allclose(forward, backward[::-1], atol=1e-6)
    assert not np.allclose(forward[0], forward[1])


def test_rationale_mode_returns_rationales(tiny, texts):
    encoder = GraceEncoder(*tiny, max_new_tokens=5)
    embeddings, rationales = encoder.encode_with_rationales(texts)
    assert len(rationales) == len(texts) and all(rationales)
    assert encoder.generated == len(texts)
    assert np.isfinite(embeddings).all()


def test_rationale_cache_skips_generation_on_second_call(tiny, texts, tmp_path, monkeypatch):
    model, tokenizer = tiny
    calls = []
    original = generation._decode  # the sampling loop of the shared pass
    monkeypatch.setattr(generation, "_decode", lambda *a, **k: calls.append(1) or original(*a, **k))
    config = EncoderConfig(max_new_tokens=6, cache_dir=str(tmp_path), batch_size=2)

    first, first_rationales = GraceEncoder(model, tokenizer, config).encode_with_rationales(texts)
    n_calls = len(calls)
    assert n_calls == 3

    again = GraceEncoder(model, tokenizer, config)  # a new encoder reads the same folder
    second, second_rationales = again.encode_with_rationales(texts)
    assert len(calls) == n_calls and again.generated == 0
    assert second_rationales == first_rationales
    assert np.allclose(first, second, atol=1e-5)

    other_seed = GraceEncoder(model, tokenizer, config, seed=1)
    other_seed.encode(texts[:1])
    assert other_seed.generated == 1


def test_empty_and_blank_texts_are_encoded_as_empty_string(tiny):
    encoder = GraceEncoder(*tiny, mode="direct")
    with pytest.warns(UserWarning, match="2 empty or whitespace-only texts"):
        embeddings = encoder.encode(["", "   \n", "words"])
    assert np.isfinite(embeddings).all()
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert np.allclose(embeddings[0], embeddings[1])
    with pytest.warns(UserWarning):
        rationale_mode = GraceEncoder(*tiny, max_new_tokens=4).encode([" "])
    assert np.isfinite(rationale_mode).all()


def test_empty_list_gives_empty_matrix(tiny):
    assert GraceEncoder(*tiny, mode="direct").encode([]).shape == (0, 32)


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="Unknown mode 'both'"):
        EncoderConfig(mode="both")


ENGLISH = {"the", "a", "and", "of", "to", "is", "in", "this", "it", "that", "on", "with", "i"}


@pytest.mark.smollm2
def test_smollm2_writes_english_and_embeds_related_texts_closer(smollm2):
    encoder = GraceEncoder(*smollm2, temperature=0.0, max_new_tokens=32)
    texts = [
        "A dog is running across the park with a ball.",
        "A puppy chases a ball on the grass.",
        "The quarterly earnings report showed a loss for the bank.",
    ]
    embeddings, rationales = encoder.encode_with_rationales(texts)
    for rationale in rationales:
        words = rationale.lower().replace(",", " ").replace(".", " ").split()
        assert len(words) >= 5
        letters = sum(c.isascii() and (c.isalpha() or c.isspace()) for c in rationale)
        assert letters / len(rationale) > 0.8
        assert len(ENGLISH.intersection(words)) >= 2
    similarity = embeddings @ embeddings.T
    assert similarity[0, 1] > similarity[0, 2]
    assert similarity[0, 1] > similarity[1, 2]


def test_k_draws_are_distinct_and_their_mean_is_the_embedding(tiny, texts):
    encoder = GraceEncoder(*tiny, max_new_tokens=6, num_rationales=3, batch_size=6)
    draws, rationales = encoder.encode_draws(texts)
    assert draws.shape == (len(texts), 3, tiny[0].config.hidden_size)
    assert np.allclose(np.linalg.norm(draws, axis=2), 1.0, atol=1e-5)
    assert len(rationales[0]) == 3 and len(set(rationales[0])) > 1  # independent samples
    assert encoder.generated == 3 * len(texts)

    embeddings, first = GraceEncoder(
        *tiny, max_new_tokens=6, num_rationales=3, batch_size=6
    ).encode_with_rationales(texts)
    mean = draws.mean(axis=1)
    assert np.allclose(embeddings, mean / np.linalg.norm(mean, axis=1, keepdims=True), atol=1e-5)
    assert first == [r[0] for r in rationales]


def test_greedy_and_direct_modes_make_a_single_draw(tiny, texts):
    assert EncoderConfig(temperature=0, num_rationales=4).draws == 1
    assert EncoderConfig(mode="direct", num_rationales=4).draws == 1
    assert EncoderConfig(num_rationales=4).draws == 4
    with pytest.raises(ValueError, match="num_rationales"):
        EncoderConfig(num_rationales=0)


def test_echo_mode_pools_the_text_written_as_its_rationale(tiny, texts):
    model, tokenizer = tiny
    encoder = GraceEncoder(model, tokenizer, mode="echo", max_new_tokens=6, batch_size=2)
    embeddings, rationales = encoder.encode_with_rationales(texts)
    assert encoder.generated == 0  # nothing sampled
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    for text, written, text_ids in zip(texts, rationales, ids, strict=True):
        assert written == (text if len(text_ids) < 6 else tokenizer.decode(text_ids[:6]))
    # The reference: the same completions pooled by a second forward pass, one row at a time.
    eos = generation.eos_token_ids(model, tokenizer)[0]
    copies = [i[:6] if len(i) >= 6 else [*i, eos] for i in ids]
    prompts = build_prompts(tokenizer, texts, encoder.config.system_prompt, 1024)
    rollouts = generation.rollouts_from_completions(tokenizer, prompts, copies, model.device)
    reference = generation.embed_rollouts(model, rollouts, encoder.prefix_length, "mean")
    assert np.allclose(embeddings, reference.numpy(), atol=1e-5)
    assert EncoderConfig(mode="echo", num_rationales=4).draws == 1


def test_cached_draws_stay_distinct(tiny, texts, tmp_path):
    config = EncoderConfig(max_new_tokens=6, num_rationales=2, cache_dir=str(tmp_path))
    first, rationales = GraceEncoder(*tiny, config).encode_draws(texts[:2])
    again = GraceEncoder(*tiny, config)
    second, cached = again.encode_draws(texts[:2])
    assert again.generated == 0 and cached == rationales
    assert np.allclose(first, second, atol=1e-5)


def test_int8_encoder_stays_close_to_fp32_and_names_other_weights(texts):
    from grace.models import model_fingerprint

    fp32 = GraceEncoder.from_pretrained("tiny-random", device="cpu", mode="direct")
    int8 = GraceEncoder.from_pretrained("tiny-random", mode="direct", int8=True)
    assert "DynamicQuantizedLinear" in repr(int8.model) and int8.model.device.type == "cpu"
    cosine = (fp32.encode(texts) * int8.encode(texts)).sum(axis=1)
    assert cosine.min() > 0.98
    assert model_fingerprint(fp32.model) != model_fingerprint(int8.model)
    with pytest.raises(ValueError, match="quantised model"):
        GraceEncoder(fp32.model, fp32.tokenizer, int8=True)


def test_sampled_rationales_ignore_batching_order_and_cache(tiny, texts, tmp_path):
    settings = dict(max_new_tokens=8, num_rationales=2)
    reference, rationales = GraceEncoder(*tiny, batch_size=4, **settings).encode_draws(texts)

    def check(draws, written, rows=slice(None)):
        assert written == rationales[rows]
        assert np.allclose(draws, reference[rows], atol=1e-5)

    for i, text in enumerate(texts):  # each text alone
        check(*GraceEncoder(*tiny, **settings).encode_draws([text]), rows=slice(i, i + 1))
    backward, written = GraceEncoder(*tiny, batch_size=10, **settings).encode_draws(texts[::-1])
    check(backward[::-1], written[::-1])
    check(*GraceEncoder(*tiny, batch_size=2, **settings).encode_draws(texts))

    cached = GraceEncoder(*tiny, cache_dir=str(tmp_path), batch_size=4, **settings)
    cached.encode_draws(texts[1:3])  # a partly filled cache
    check(*cached.encode_draws(texts))
    assert cached.generated == 2 * len(texts)  # each draw sampled once


ENCODE_IN_A_PROCESS = """
import json, sys
import numpy as np
from grace.encoder import GraceEncoder
texts, cache, out = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
encoder = GraceEncoder.from_pretrained("tiny-random", device="cpu", max_new_tokens=8,
                                       cache_dir=cache, batch_size=3)
np.save(out, encoder.encode(texts))
"""


def test_two_processes_sharing_a_cache_agree_with_one_uncached_run(tiny, texts, tmp_path):
    reference = GraceEncoder(*tiny, max_new_tokens=8).encode(texts)
    orders = {"a": texts, "b": texts[::-1]}
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                ENCODE_IN_A_PROCESS,
                json.dumps(order),
                str(tmp_path / "cache"),
                str(tmp_path / f"{name}.npy"),
            ]
        )
        for name, order in orders.items()
    ]
    assert [run.wait(timeout=300) for run in runs] == [0, 0]
    assert np.allclose(np.load(tmp_path / "a.npy"), reference, atol=1e-5)
    assert np.allclose(np.load(tmp_path / "b.npy")[::-1], reference, atol=1e-5)


@pytest.mark.parametrize("single_pass", [True, False])
def test_a_warm_cache_gives_exactly_what_the_cold_one_gave(tiny, texts, tmp_path, single_pass):
    """Cached and freshly sampled rationales are pooled by one path: bit for bit equal."""
    config = EncoderConfig(
        max_new_tokens=6, num_rationales=2, cache_dir=str(tmp_path), single_pass=single_pass
    )
    cold, written = GraceEncoder(*tiny, config).encode_draws(texts)
    warm_encoder = GraceEncoder(*tiny, config)  # the same folder, now warm for every text
    warm, again = warm_encoder.encode_draws(texts)
    assert warm_encoder.generated == 0 and again == written
    assert np.array_equal(cold, warm)
    mixed_folder = tmp_path / "mixed"
    mixed = GraceEncoder(*tiny, replace(config, cache_dir=str(mixed_folder)))
    mixed.encode_draws(texts[1:3])  # some texts cached, the rest sampled in the same batch
    assert np.array_equal(mixed.encode_draws(texts)[0], cold)
