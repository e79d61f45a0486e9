"""What the command line needs before torch loads (so ``grace --help`` answers at once): the
paper's longest rationale, the run folder's settings file and the profiles shipped in the
package."""

from __future__ import annotations

from pathlib import Path

#: The paper's longest rationale (and policy completion), in tokens.
MAX_NEW_TOKENS = 2048

#: How ``GraceEncoder`` embeds a text: with a sampled rationale (the paper), the prompt alone,
#: or the text itself written as the rationale (``grace.encoder``).
MODES = ("rationale", "direct", "echo")

#: What makes a folder a run folder: its settings and their hash (``grace.runs``).
RUN_CONFIG_FILE = "grace_config.json"

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"  # package data: in the wheel too


def known_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


#: RAM (MB) for an evaluation's embeddings before the rest go to a file on disk.
MEMORY_MB = 4096
