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
so a report written under other settings is never reused. The book's run names live here too.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from grace.config import ConfigError, TrainConfig, load_config
from grace.models import safetensors_problem

OFFLINE_MODELS = ("tiny-random", "smollm2-135m-instruct")  # built or shipped here, no hub

CONFIG_FILE = "grace_config.json"
HISTORY_FILE = "log_history.json"

#: The book's trained models, by run folder name, with what each changes in the profile.
RUNS: dict[str, dict] = {
    "grace-supervised": {"run.method": "grace", "run.setting": "supervised"},
    "grace-unsupervised": {"run.method": "grace", "run.setting": "unsupervised"},
    "contrastive": {"run.method": "contrastive"},
    "simcse": {"run.method": "simcse"},
}
#: The table label of each model and its run folder (``None`` for the profile's base model).
LABELS = {
    "base": None,
    "+CL": "contrastive",
    "GRACE supervised": "grace-supervised",
    "SimCSE": "simcse",
    "GRACE unsupervised": "grace-unsupervised",
}


def saved_hash(folder: str | Path) -> str | None:
    """The settings hash recorded in a run folder (None: not a run folder of this layout)."""
    path = Path(folder) / CONFIG_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())["settings_hash"]
    except (json.JSONDecodeError, KeyError):
        return None


def is_finished(folder: str | Path, config: TrainConfig) -> bool:
    """Whether ``folder`` holds a finished run trained with exactly these settings."""
    folder = Path(folder)
    return (folder / HISTORY_FILE).exists() and saved_hash(folder) == config.settings_hash()


def prepare_run_folder(config: TrainConfig) -> Path:
    """Make ``run.output_dir`` the folder of these settings; returns it.

    A run folder written under other settings is moved aside to ``<name>.previous-<its
    hash>`` (a new name each time: nothing is deleted), with a warning. A folder that holds
    files but no run is refused: it is not ours to move.
    """
    folder = Path(config.run.output_dir)
    if folder.exists() and any(folder.iterdir()):
        found = saved_hash(folder)
        if found is None:
            raise ConfigError(
                f"run.output_dir={folder} holds files but no run ({CONFIG_FILE} is missing or "
                "unreadable); choose an empty or new folder."
            )
        if found != config.settings_hash():
            aside = folder.with_name(f"{folder.name}.previous-{found}")
            number = 1
            while aside.exists():
                number += 1
                aside = folder.with_name(f"{folder.name}.previous-{found}-{number}")
            folder.rename(aside)
            warnings.warn(
                f"{folder} held a run with other settings; moved it to {aside} (kept, not "
                "deleted) and training anew.",
                stacklevel=2,
            )
    folder.mkdir(parents=True, exist_ok=True)
    record = {"settings_hash": config.settings_hash(), "config": config.to_dict()}
    (folder / CONFIG_FILE).write_text(json.dumps(record, indent=2))
    return folder


@contextmanager
def run_lock(folder: str | Path) -> Iterator[None]:
    """Hold ``<folder>.lock`` (beside the folder, which may be moved aside) while a run writes:
    a second process on the same folder stops with an error instead of resuming the first's
    checkpoints or writing its log twice. The lock goes with the process that holds it."""
    import fcntl

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    path = folder.with_name(folder.name + ".lock")
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            handle.seek(0)
            raise ConfigError(
                f"{folder} is being written by another run (process {handle.read().strip()}); "
                "wait for it, or choose another run.output_dir."
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
    if problems:
        found = "; ".join(f"{folder / name}: {why}" for name, why in problems.items())
        raise ConfigError(
            f"The checkpoint to resume from is damaged ({found}). Delete {folder} to resume "
            "from the checkpoint before it, or the whole run folder to train from scratch."
        )


def mark_finished(folder: str | Path, log_history: list[dict]) -> None:
    """The last thing a run writes: its logged metrics, which also mean "finished"."""
    (Path(folder) / HISTORY_FILE).write_text(json.dumps(log_history, indent=1))


def log_history(folder: str | Path) -> list[dict]:
    """The logged metrics of a finished run, one dict per logging step."""
    return json.loads((Path(folder) / HISTORY_FILE).read_text())


def trained_model(config: TrainConfig) -> Path:
    """The folder of a finished run with these settings, training (or resuming) it if needed.

    Notebooks call this, so a later notebook (or a rerun) reuses a model trained earlier, and
    a profile edit that changes training trains again.
    """
    if not is_finished(config.run.output_dir, config):
        from grace.train import train

        train(config)
    return Path(config.run.output_dir)


def run_config(config: TrainConfig, name: str, out: str | Path) -> TrainConfig:
    """The profile's config for one of the book's runs (``RUNS``), in ``out/name``."""
    return config.with_changes({**RUNS[name], "run.output_dir": str(Path(out) / name)})


def model_paths(
    config: TrainConfig, out: str | Path, labels: list[str] | None = None
) -> dict[str, str]:
    """Table label -> what to load: the profile's base model, or the run folder in ``out``,
    trained first (with a message) when no finished run with the profile's settings is there.
    So a notebook opened alone (on Colab, say) gets its models without the earlier ones."""
    paths = {}
    for label in labels or list(LABELS):
        run = LABELS[label]
        if run is None:
            paths[label] = config.run.model
            continue
        run_settings = run_config(config, run, out)
        if not is_finished(run_settings.run.output_dir, run_settings):
            print(
                f"{label}: no finished run with these settings in {run_settings.run.output_dir}; "
                f"training it now with the profile's settings (notebooks 5-7 do the same; see "
                "the run summary of the book for how long each took on 2 CPU cores)."
            )
        paths[label] = str(trained_model(run_settings))
    return paths


def model_identity(model: str) -> str:
    """What names a model's weights: a run folder's settings hash, else the name itself."""
    return saved_hash(model) or model


# Encoder settings that never change a score (where rationales are stored, how rows are
# batched), and those that only matter when rationales are sampled.
NOT_SCORING = ("cache_dir", "batch_size")
SAMPLING = ("max_new_tokens", "temperature", "top_p", "seed", "num_rationales", "single_pass")


def report_key(model: str, suite: str, **settings) -> dict:
    """What an evaluation report depends on: model identity, encoder settings, suite.

    A direct-mode key ignores the sampling settings, so every direct row of a model is one.
    """
    ignored = NOT_SCORING + (SAMPLING if settings.get("mode") == "direct" else ())
    settings = {k: v for k, v in settings.items() if k not in ignored}
    return json.loads(
        json.dumps({"model": model_identity(model), "suite": suite, "settings": settings})
    )


def setup_notebook(profile: str, output_dir: str) -> tuple[TrainConfig, Path]:
    """The shared first cell of every notebook: the profile's config and the output folder.

    Profiles of an offline model (``tiny``, ``cpu``, ``cpu-long``) switch the Hugging Face hub
    off unless the environment says otherwise.
    """
    model = load_config(profile).run.model
    os.environ.setdefault("HF_HUB_OFFLINE", "1" if model in OFFLINE_MODELS else "0")
    # huggingface_hub read the variable when it was imported (with grace.config, before this
    # call): its module constant is what is_offline_mode() answers from, so set it too.
    import huggingface_hub.constants as hub

    hub.HF_HUB_OFFLINE = os.environ["HF_HUB_OFFLINE"].upper() in hub.ENV_VARS_TRUE_VALUES
    config = load_config(profile, {"run.output_dir": output_dir})
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    print(f"profile={profile} model={config.run.model} output_dir={output_dir}")
    return config, out
