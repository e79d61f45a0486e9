"""The package as a Colab or GPU user meets it: a wheel installed outside the repository."""

import json
import os
import re
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def repository_url() -> str:
    return yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]


def data_wheels_in_makefile() -> list[str]:
    lines = (ROOT / "Makefile").read_text().splitlines()
    line = next(text for text in lines if "--no-deps" in text)
    return re.findall(r"[\w-]+==[\d.]+", line)


EXECUTED = sorted((ROOT / "book" / "executed").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize(
    "path", NOTEBOOKS + EXECUTED, ids=lambda p: f"{p.parent.name}/{p.name[:2]}"
)
def test_install_cell_and_colab_link_use_the_one_repository_url(path):
    """Every notebook's install cell, and its executed copy's (the book's page), is the one
    ``install_cell`` writes (refresh_book.py)."""
    from grace.book.notebooks import DATA_WHEELS, install_cell

    cells = ["".join(c["source"]) for c in json.loads(path.read_text())["cells"]]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    url, tag = repository_url(), f"v{version}"
    colab = f"https://colab.research.google.com/github/{url.removeprefix('https://github.com/')}"
    # The Colab link opens the source notebook (default parameters), not an executed copy, of
    # the release the install cell installs.
    assert f"({colab}/blob/{tag}/notebooks/{path.name})" in cells[0]
    assert [c for c in cells if "google.colab" in c] == [install_cell(url, tag)]
    assert f'REVISION = "{tag}"' in install_cell(url, tag)
    assert f'git+{url}@{tag}"' in (ROOT / "README.md").read_text()  # the README's pip line
    compile(install_cell(url, tag), "install cell", "exec")
    metadata = json.loads(path.read_text())["metadata"]
    assert metadata["accelerator"] == "GPU" and metadata["colab"]["gpuType"] == "T4"
    assert DATA_WHEELS == data_wheels_in_makefile()


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory) -> Path:
    """A fresh virtual environment outside the repository with grace installed from a wheel.

    The heavy dependencies (torch, transformers, ...) come from the test environment through
    a path entry, so only the wheel is new; its `.pth` does not run the editable hook.
    """
    base = tmp_path_factory.mktemp("wheel")
    dist = base / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(ROOT),
        ],
        check=True,
    )
    (wheel,) = dist.glob("grace_book-*.whl")
    env = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "-q",
            str(wheel),
        ],
        check=True,
    )
    return env


def run_in(env: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={
            "PATH": f"{env / 'bin'}:/usr/bin:/bin",
            "HF_HUB_OFFLINE": "1",
            "HOME": str(Path.home()),
        },
    )


def test_wheel_ships_profiles_and_trains_outside_the_repo(wheel_env, tmp_path):
    python = wheel_env / "bin" / "python"
    where = run_in(
        wheel_env,
        python,
        "-c",
        (
            "import grace, grace.config as c; print(grace.__file__); "
            "print(*[c.load_config(p).run.model for p in c.known_profiles()])"
        ),
        cwd=tmp_path,
    )
    assert where.returncode == 0, where.stderr
    location, models = where.stdout.splitlines()
    assert str(wheel_env) in location and str(ROOT) not in location  # the wheel, not the repo
    assert "tiny-random" in models.split() and len(models.split()) >= 4
    trained = run_in(
        wheel_env,
        wheel_env / "bin" / "grace",
        "train",
        "--config",
        "tiny",
        "--set",
        f"output_dir={tmp_path / 'run'}",
        "--set",
        "max_steps=1",
        cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert (tmp_path / "run" / "model.safetensors").exists()


def test_reproduce_runs_a_shipped_notebook_from_the_wheel(wheel_env, tmp_path):
    """As on Colab: no checkout, only the wheel. Its notebooks are package data, and the run
    lands in the current folder (not in site-packages)."""
    done = run_in(
        wheel_env, wheel_env / "bin" / "grace", "reproduce", "--profile", "tiny", "--only", "1",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "1 of 10 notebooks done" in done.stdout
    run = tmp_path / "runs" / "tiny"
    summary = json.loads((run / "reproduce.json").read_text())
    assert list(summary["notebooks"]) == ["01_the_idea.ipynb"]
    executed = json.loads((run / "notebooks" / "01_the_idea.ipynb").read_text())
    printed = "".join(
        "".join(output.get("text", ""))
        for cell in executed["cells"]
        for output in cell.get("outputs", [])
    )
    assert "profile=tiny" in printed and "output_dir=runs/tiny" in printed
    book = run_in(wheel_env, wheel_env / "bin" / "grace", "book", cwd=tmp_path)
    assert book.returncode != 0 and "checkout" in book.stderr


def test_the_wheel_lists_every_package():
    """pyproject.toml lists the packages by hand (to ship notebooks/): a new one must be added."""
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "grace").rglob("__init__.py")
    }
    assert found <= listed and listed - found == {"grace.book.ipynb", "grace.profiles"}  # data


def test_another_torch_spec_on_an_existing_venv_reinstalls_torch(tmp_path):
    """`make test TORCH_SPEC=torch` on a venv built with the CPU pin must not keep it."""
    root = Path(__file__).resolve().parent.parent
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    calls = tmp_path / "calls.txt"
    python = venv / "bin" / "python"  # stands in for the venv's python: records its arguments
    python.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    python.chmod(0o755)

    def spec_target(spec: str) -> None:
        subprocess.run(
            ["make", "-s", "-C", str(root), f"VENV={venv}", f"TORCH_SPEC={spec}",
             f"{venv}/.torch-spec"],
            check=True,
        )  # fmt: skip

    spec_target("torch==2.13.0")  # first record of the spec: the installed torch is kept
    assert (venv / ".torch-spec").read_text() == "torch==2.13.0\n"
    spec_target("torch==2.13.0")  # unchanged: nothing is uninstalled
    assert not calls.exists()
    spec_target("torch")
    assert calls.read_text() == "-m pip uninstall -q -y torch\n"
    assert (venv / ".torch-spec").read_text() == "torch\n"


def test_the_device_smoke_check_passes_on_the_cpu():
    """scripts/gpu_smoke.py --device cpu: the GPU box's checks, kept alive by CI."""
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, str(root / "scripts" / "gpu_smoke.py"), "--device", "cpu"],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[-1] == "all checks passed"
    checks = [line for line in lines if line.startswith("ok  ")]
    assert len(checks) == 9
    trained = [line for line in checks if "largest weight change" in line]
    assert len(trained) == 5 and all("every weight equal" in line for line in trained)
    assert sum("adapters on the base" in line for line in trained) == 1
    assert any(line.startswith("ok  mteb LeeSTS") for line in checks)
    assert any(line.startswith("ok  GRPO, two processes") for line in checks)


def test_the_device_smoke_check_fails_when_asked_for_cuda_that_is_not_there():
    """A check of the CUDA paths that finds no CUDA has checked nothing: non-zero, one line."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the check would run")
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, str(root / "scripts" / "gpu_smoke.py"), "--device", "cuda"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert "no CUDA device" in result.stderr and result.stderr.count("\n") == 1
