import numpy as np
import pandas as pd

from grace.encoder import GraceEncoder, Variant, mean_of_draws
from grace.evaluation.noise import VariantBank, mean_std, plus_minus


def test_variants_read_one_bank_of_draws(tiny, texts):
    encoder = GraceEncoder(*tiny, max_new_tokens=5, num_rationales=4, batch_size=8)
    draws = [Variant(5, None, j) for j in range(4)]
    bank = VariantBank(encoder, draws)
    variants = {f"draw {j + 1}": bank.text_encoder([v], f"d{j}") for j, v in enumerate(draws)}
    variants["mean of 4"] = bank.text_encoder(draws, "m4")

    draw_2 = variants["draw 2"].encode_texts(texts)
    assert encoder.generated == 4 * len(texts)
    mean_4 = variants["mean of 4"].encode_texts(texts[::-1])
    assert encoder.generated == 4 * len(texts)  # no new sampling for other variants or orders
    assert not np.allclose(draw_2, variants["draw 1"].encode_texts(texts))
    all_draws = np.stack([variants[f"draw {j}"].encode_texts(texts) for j in (1, 2, 3, 4)], 1)
    assert np.allclose(mean_4[::-1], mean_of_draws(all_draws), atol=1e-6)


def test_a_bank_past_its_memory_keeps_its_variants_on_disk_unchanged(tiny, texts):
    draws = [Variant(4, None, j) for j in range(2)] + [Variant(0)]
    in_ram = VariantBank(GraceEncoder(*tiny, max_new_tokens=4, batch_size=8), draws)
    on_disk = VariantBank(GraceEncoder(*tiny, max_new_tokens=4, batch_size=8), draws, 1e-6)
    for variants in ([draws[1]], draws[:2], [draws[2]]):
        assert np.array_equal(in_ram(texts, variants), on_disk(texts[::-1], variants)[::-1])
    assert all(memory.path is not None for memory in on_disk.memory.values())  # spilled
    assert all(memory.path is None for memory in in_ram.memory.values())


def test_mean_std_over_rows():
    table = pd.DataFrame(
        {"STS": [50.0, 52.0, 54.0], "Retr": [10.0, 10.0, 10.0]},
        index=["draw 1", "draw 2", "draw 3"],
    )
    stats = mean_std(table, ["draw 1", "draw 2", "draw 3"])
    assert stats.loc["mean", "STS"] == 52.0 and stats.loc["std", "STS"] == 2.0
    assert plus_minus(stats)["STS"] == "52.00 ± 2.00"
    assert plus_minus(stats)["Retr"] == "10.00 ± 0.00"
