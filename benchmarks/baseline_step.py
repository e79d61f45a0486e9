"""CPU seconds per +CL (or SimCSE) step, with the system prefix run once per batch or per row.

    python benchmarks/baseline_step.py --profile cpu [--steps 5] [--method contrastive]

Both ways train the same batches from the same weights in one process, alternating step by
step so that drift in the machine's speed hits both alike: forward, backward and the optimizer
step of ``ContrastiveTrainer``. Time is the process's CPU time (all its threads), so other work
on the machine changes it little; the script prints the medians and ends with
``speedup: X.XXx`` (per row / shared). The first step of each way is a warm-up, not counted.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from grace.baselines import build_contrastive_trainer  # noqa: E402
from grace.config import load_config  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--method", default="contrastive", choices=("contrastive", "simcse"))
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        config = load_config(args.profile, [f"output_dir={folder}", f"method={args.method}"])
        trainer = build_contrastive_trainer(config)
        batches = iter(trainer.get_train_dataloader())
        models = {True: trainer.model, False: copy.deepcopy(trainer.model)}
        optimizers = {way: torch.optim.AdamW(m.parameters(), lr=1e-5) for way, m in models.items()}
        seconds = {True: [], False: []}
        for step in range(args.steps + 1):
            batch = next(batches)
            for way, model in models.items():
                model.train()
                trainer.share_prefix = way
                began = time.process_time()
                loss = trainer.compute_loss(model, batch)
                loss.backward()
                optimizers[way].step()
                optimizers[way].zero_grad()
                if step:
                    seconds[way].append(time.process_time() - began)
    shared, per_row = statistics.median(seconds[True]), statistics.median(seconds[False])
    print(
        f"profile {args.profile}, {args.method}, batch {config.baselines.batch_size}, "
        f"{args.steps} measured steps, torch threads {torch.get_num_threads()}"
    )
    print(f"CPU s per step: prefix per row {per_row:.2f}, shared {shared:.2f}")
    print(f"speedup: {per_row / shared:.2f}x")


if __name__ == "__main__":
    main()
