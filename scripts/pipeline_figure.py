"""Draw the method chapter's pipeline figure (book/figures/pipeline.png): a text becomes a
rationale, the pooled states of both become an embedding, similarities become rewards, and
the group-relative advantages update the policy that wrote the rationale.

    python scripts/pipeline_figure.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "book" / "figures" / "pipeline.png"
# (label, detail, x centre); every box sits on one row, read left to right.
STAGES = [
    ("text $x$", "query, positive\nor negative", 0.07),
    ("policy $\\pi_\\theta$", "chat template +\nsystem prompt", 0.25),
    ("rationale $r$", "sampled,\nup to a token cap", 0.43),
    ("pooling", "mean of last-layer\nstates over $x$ and $r$", 0.61),
    ("embedding $e(x, r)$", "unit length", 0.79),
]
REWARD = ("reward $r_{gi}$", "cosines: query, positive\nrollouts, negative", 0.79)
ADVANTAGE = ("advantage $A_{gi}$", "$r_{gi}$ minus its\ngroup's mean", 0.43)


def box(ax, label: str, detail: str, x: float, y: float, colour: str) -> None:
    ax.add_patch(
        FancyBboxPatch(
            (x - 0.075, y - 0.11), 0.15, 0.22, boxstyle="round,pad=0.01", fc=colour, ec="0.3"
        )
    )
    ax.text(x, y + 0.045, label, ha="center", va="center", fontsize=11, weight="bold")
    ax.text(x, y - 0.05, detail, ha="center", va="center", fontsize=8.5, color="0.25")


def arrow(ax, start: tuple, end: tuple, text: str = "", bend: float = 0.0) -> None:
    style = f"arc3,rad={bend}"
    ax.add_patch(
        FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=14, color="0.3",
                        connectionstyle=style, lw=1.3)
    )
    if text:
        middle = ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)
        ax.text(middle[0], middle[1] + 0.03, text, ha="center", fontsize=8.5, style="italic")


def main() -> None:
    fig, ax = plt.subplots(figsize=(11, 3.6))
    ax.set_xlim(-0.02, 0.89)
    ax.set_ylim(0, 1)
    ax.axis("off")
    top, bottom = 0.72, 0.24
    for i, (label, detail, x) in enumerate(STAGES):
        box(ax, label, detail, x, top, "#dbe9f6" if i != 2 else "#fde6c8")
        if i:
            arrow(ax, (STAGES[i - 1][2] + 0.077, top), (x - 0.077, top))
    box(ax, *REWARD[:2], REWARD[2], bottom, "#e3f1dc")
    box(ax, *ADVANTAGE[:2], ADVANTAGE[2], bottom, "#e3f1dc")
    arrow(ax, (0.79, top - 0.112), (0.79, bottom + 0.112), "")
    arrow(ax, (REWARD[2] - 0.077, bottom), (ADVANTAGE[2] + 0.077, bottom))
    arrow(ax, (ADVANTAGE[2] - 0.077, bottom), (0.25, top - 0.112), "GRPO update", bend=-0.25)
    ax.text(0.43, 0.97, "The policy both writes the rationale and embeds it; the reward "
            "trains it to write rationales that embed well.", ha="center", va="top",
            fontsize=9.5)
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=130, bbox_inches="tight")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
