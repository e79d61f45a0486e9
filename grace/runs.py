"""Run folders that are what their settings say.

A run folder holds ``grace_config.json``: the full configuration and the hash of the settings
that decide the trained weights (``TrainConfig.settings_hash``; logging and evaluation
settings are left out). The rules:

* a finished run (``log_history.json`` written) is reused only when the hashes match;
* an unfinished run resumes from its last checkpoint only when the hashes match;
* otherwise the old folder is moved aside to ``<folder>.previous-<its hash>`` (never resumed
  into a different configuration, never deleted) and training starts from scratch;
* a folder with files but no run is refused, and one process at a time writes a run folder.

Evaluation reports carry a key of the same kind (model identity, encoder settings, suite),
so a report written under other settings is never reused.
"""

from __future__ import annotations

import glob
import json
import os
import re
import time
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from grace.config import ConfigError, TrainConfig, from_dict
from grace.constants import RUN_CONFIG_FILE
from grace.files import appended_records, write_text_atomically
from grace.models import pickle_problem, safetensors_problem

HISTORY_FILE = "log_history.json"


def saved_hash(folder: str | Path) -> str | None:
    """The settings hash recorded in a run folder (None: not a run folder of this layout)."""
    path = Path(folder) / RUN_CONFIG_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())["settings_hash"]
    except (ValueError, KeyError, TypeError, RecursionError):  # RecursionError: nested too deep
        return None


def saved_config(folder: str | Path) -> TrainConfig:
    """The configuration a run folder was trained with."""
    path = Path(folder) / RUN_CONFIG_FILE
    if not path.exists():
        raise ConfigError(f"{folder} is not a run folder: {RUN_CONFIG_FILE} is missing.")
    return from_dict(json.loads(path.read_text())["config"])


def is_finished(folder: str | Path, config: TrainConfig) -> bool:
    """Whether ``folder`` holds a finished run trained with exactly these settings."""
    folder = Path(folder)
    return (folder / HISTORY_FILE).exists() and saved_hash(folder) == config.settings_hash()


def prepare_run_folder(config: TrainConfig) -> Path:
    """Make ``run.output_dir`` the folder of these settings; returns it.

    A run folder written under other settings is moved aside to ``<name>.previous-<its
    hash>`` (a new name each time: nothing is deleted), with a warning; a run of these
    settings moved aside earlier is moved back (``restore_moved_run``). A folder that holds
    files but no run is refused: it is not ours to move.
    """
    folder = Path(config.run.output_dir)
    restore_moved_run(config)
    if saved_hash(folder) != config.settings_hash():
        move_aside(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = {"settings_hash": config.settings_hash(), "config": config.to_dict()}
    write_text_atomically(folder / RUN_CONFIG_FILE, json.dumps(record, indent=2))
    return folder


def move_aside(folder: Path) -> None:
    """Move a run folder of other settings to ``<name>.previous-<its hash>[-n]``."""
    if not folder.exists() or not any(folder.iterdir()):
        return
    found = saved_hash(folder)
    if found is None:
        raise ConfigError(
            f"run.output_dir={folder} holds files but no run ({RUN_CONFIG_FILE} is missing or "
            "unreadable); choose an empty or new folder."
        )
    aside = folder.with_name(f"{folder.name}.previous-{found}")
    number = 1
    while aside.exists():
        number += 1
        aside = folder.with_name(f"{folder.name}.previous-{found}-{number}")
    folder.rename(aside)
    warnings.warn(
        f"{folder} held a run with other settings; moved it to {aside} (kept, not deleted).",
        stacklevel=3,
    )


def restore_moved_run(config: TrainConfig) -> None:
    """Move back the latest run of these settings that a start with other settings moved
    aside: a command with one bad value, then the original command again, finds its run
    (finished or resumable) instead of training from scratch."""
    folder = Path(config.run.output_dir)
    wanted = config.settings_hash()
    if saved_hash(folder) == wanted:
        return
    prefix = f"{folder.name}.previous-{wanted}"
    numbers = {}  # <prefix> is the first moved aside, <prefix>-2 the second, ...
    for path in folder.parent.glob(glob.escape(prefix) + "*"):
        rest = path.name.removeprefix(prefix)
        if path.is_dir() and (not rest or re.fullmatch(r"-[0-9]+", rest)):
            numbers[path] = int(rest[1:]) if rest else 1
    if not numbers:
        return
    latest = max(numbers, key=numbers.get)
    move_aside(folder)
    if folder.exists():
        folder.rmdir()  # empty: move_aside leaves only those
    latest.rename(folder)
    warnings.warn(
        f"{latest} held the run of these settings; moved it back to {folder}.", stacklevel=3
    )


def is_main_process() -> bool:
    """True unless this is one of the other processes of a multi-process job (torchrun or
    `accelerate launch` set ``RANK``): the main one locks and prepares the run folder."""
    return int(os.environ.get("RANK", "0")) == 0


def wait_for_run_folder(config: TrainConfig, seconds: float = 600.0) -> Path:
    """In the other processes of a job: wait until the main process has made ``run.output_dir``
    the folder of these settings (moving an older run aside first), so that no process reads
    another run's checkpoints."""
    folder = Path(config.run.output_dir)
    deadline = time.monotonic() + seconds
    while saved_hash(folder) != config.settings_hash():
        if time.monotonic() > deadline:
            raise ConfigError(
                f"{folder}: the main process did not prepare the run folder within {seconds:.0f} s."
            )
        time.sleep(0.2)
    return folder


def run_lock(folder: str | Path) -> AbstractContextManager[None]:
    """Hold ``<folder>.lock`` while a run writes. It lies beside the folder, not in it, because
    a folder of other settings is moved aside under the lock."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    return folder_lock(folder, folder.with_name(folder.name + ".lock"))


@contextmanager
def folder_lock(folder: Path, path: Path) -> Iterator[None]:
    """Hold the lock file ``path`` for ``folder``: a second process writing the same folder
    stops with an error instead of resuming the first's checkpoints or overwriting its
    records. The lock goes with the process that holds it."""
    import fcntl

    try:
        handle = open(path, "a+", encoding="utf-8")
    except OSError as error:
        raise ConfigError(
            f"{path}: cannot write the lock that guards {folder} ({error.strerror}); choose a "
            "folder inside one you can write."
        ) from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            handle.seek(0)
            raise ConfigError(
                f"{folder} is being written by another process ({handle.read().strip()}); "
                "wait for it, or choose another folder."
            ) from error
        except OSError as error:  # a file system without locks (some network mounts)
            warnings.warn(f"{path}: cannot lock ({error}); not guarding {folder}.", stacklevel=3)
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            try:
                fcntl.flock(handle, fcntl.LOCK_UN)
            except OSError:
                pass


def check_checkpoint(checkpoint: str | Path | None) -> None:
    """Refuse to resume from a damaged checkpoint, naming the file and what to do."""
    if checkpoint is None:
        return
    folder = Path(checkpoint)
    problems = {}
    try:
        json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        problems["trainer_state.json"] = str(error)
    for weights in sorted(folder.glob("*.safetensors")):
        problem = safetensors_problem(weights)
        if problem:
            problems[weights.name] = problem
    for state in sorted([*folder.glob("*.pt"), *folder.glob("*.pth")]):  # what resuming loads
        problem = pickle_problem(state)
        if problem:
            problems[state.name] = problem
    if problems:
        found = "; ".join(f"{folder / name}: {why}" for name, why in problems.items())
        raise ConfigError(
            f"The checkpoint to resume from is damaged ({found}). Delete {folder} to resume "
            "from the checkpoint before it, or the whole run folder to train from scratch."
        )


#: A GRACE run's sampled rollouts, one JSON line per sampled step (``GraceReward``).
SAMPLES_FILE = "rationales.jsonl"


def forget_samples_from(folder: str | Path, step: int) -> None:
    """Drop the rollout samples logged at ``step`` or later (and a line cut by a stop).

    A run resumed from its checkpoint of ``step`` trains the steps after it again and logs
    their samples anew; without this each of them would appear twice.
    """
    path = Path(folder) / SAMPLES_FILE
    if not path.exists():
        return
    kept = [record for record in appended_records(path) if record["step"] < step]
    path.write_text("".join(f"{json.dumps(record)}\n" for record in kept), encoding="utf-8")


def mark_finished(folder: str | Path, log_history: list[dict]) -> None:
    """The last thing a run writes: its logged metrics, which also mean "finished"."""
    write_text_atomically(Path(folder) / HISTORY_FILE, json.dumps(log_history, indent=1))


def log_history(folder: str | Path) -> list[dict]:
    """The logged metrics of a finished run, one dict per logging step."""
    return json.loads((Path(folder) / HISTORY_FILE).read_text())


def model_identity(model: str) -> str:
    """What names a model's weights: a run folder's settings hash, else the name itself."""
    return saved_hash(model) or model


# Encoder settings that change a score only by float rounding (where rationales are stored,
# how rows are batched): another batch's padding, or a cached rationale fed in one forward
# pass instead of decoded token by token, moves an embedding by ~1e-7, which can still flip a
# k-means assignment in a clustering task. Then those that only matter when rationales are
# sampled.
NOT_SCORING = ("cache_dir", "batch_size")
SAMPLING = ("max_new_tokens", "temperature", "top_p", "seed", "num_rationales", "single_pass")


def report_key(model: str, suite: str, **settings) -> dict:
    """What an evaluation report depends on: model identity, encoder settings, suite.

    A direct-mode key ignores the sampling settings, so every direct row of a model is one;
    an echo-mode key keeps only ``max_new_tokens``, where the copied text is cut.
    """
    mode = settings.get("mode")
    unused = {"direct": SAMPLING, "echo": tuple(k for k in SAMPLING if k != "max_new_tokens")}
    ignored = NOT_SCORING + unused.get(mode, ())
    settings = {k: v for k, v in settings.items() if k not in ignored}
    return json.loads(
        json.dumps({"model": model_identity(model), "suite": suite, "settings": settings})
    )
