"""The Dockerfile's own steps, run without a container engine (none runs on CI here).

Each ``FROM python:3.11-slim`` becomes a fresh virtualenv of this Python 3.11 and a
folder standing for the image's filesystem; ``WORKDIR``, ``COPY`` (``--from`` too),
``ENV`` and ``RUN`` are carried out in it, with absolute paths moved under that folder
and ``python`` meaning the stage's virtualenv. ``CC``/``CXX`` point at ``false``, so
a step that tries to compile anything fails here as it would in the compiler-less
image. The final stage's ``ENTRYPOINT`` + ``CMD`` is then started with the environment
the image documents, and its ``HEALTHCHECK`` command must pass. What cannot happen
outside an image (``useradd``) is checked by reading it. ``hadolint`` lints the file.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support import free_port, stop_process

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
#: What runs in an image but not in a virtualenv: the user is checked by reading it.
NOT_HERE = ("useradd ",)
SLIM = "python:3.11-slim"


@dataclass
class Instruction:
    keyword: str
    flags: dict[str, str]
    args: str
    line: int


def parse(text: str) -> list[Instruction]:
    """Instructions with their ``--flags``; continuation lines joined, comments dropped."""
    instructions: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        pending = ""
        flags = {}
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            name, _, value = flag[2:].partition("=")
            flags[name] = value
            rest = rest.lstrip()
        instructions.append(Instruction(keyword.upper(), flags, rest.strip(), start))
    return instructions


@dataclass
class Stage:
    name: str
    root: Path
    venv: Path
    workdir: str = "/"
    env: dict[str, str] = field(default_factory=dict)
    user: str = "root"
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)
    exposed: list[str] = field(default_factory=list)

    def path(self, container_path: str) -> Path:
        absolute = container_path if container_path.startswith("/") else (
            f"{self.workdir.rstrip('/')}/{container_path}")
        return self.root / absolute.lstrip("/")

    def translate(self, words: list[str]) -> list[str]:
        """A command with the image's programs and paths made local."""
        program, *args = words
        if program in ("python", "pip", "riskgate"):
            program = str(self.venv / "bin" / program)
        return [program, *(str(self.path(w)) if w.startswith("/") else w for w in args)]


def run_dockerfile(tmp: Path) -> Stage:
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for ins in parse(DOCKERFILE.read_text()):
        where = f"Dockerfile:{ins.line}: {ins.keyword}"
        if ins.keyword == "FROM":
            image, _, name = ins.args.partition(" AS ")
            assert image == SLIM, f"{where}: this check knows {SLIM} only"
            name = name.strip() or f"stage{len(stages)}"
            stage = stages[name] = Stage(name, tmp / name / "root", tmp / name / "venv")
            stage.root.mkdir(parents=True)
            subprocess.run([sys.executable, "-m", "venv", str(stage.venv)], check=True)
            continue
        assert stage is not None, f"{where} before FROM"
        if ins.keyword == "WORKDIR":
            stage.workdir = ins.args
            stage.path(".").mkdir(parents=True, exist_ok=True)
        elif ins.keyword == "COPY":
            *sources, dest = shlex.split(ins.args)
            source_root = stages[ins.flags["from"]].root if "from" in ins.flags else ROOT
            for source in sources:
                origin = source_root / source.lstrip("/")
                target = stage.path(dest)
                if origin.is_dir():
                    shutil.copytree(origin, target, dirs_exist_ok=True,
                                    ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    if dest.endswith("/"):
                        target = target / origin.name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, target)
        elif ins.keyword == "ENV":
            key, _, value = ins.args.partition("=")
            stage.env[key] = value
        elif ins.keyword == "RUN":
            for command in re.split(r"\s*&&\s*", ins.args):
                if command.startswith(NOT_HERE):
                    continue
                words = stage.translate(shlex.split(command))
                env = {**os.environ, **stage.env, "CC": "false", "CXX": "false",
                       "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
                done = subprocess.run(words, cwd=stage.path("."), env=env, text=True,
                                      capture_output=True, check=False)
                assert done.returncode == 0, f"{where} {command}\n{done.stdout}{done.stderr}"
        elif ins.keyword == "USER":
            stage.user = ins.args
        elif ins.keyword == "EXPOSE":
            stage.exposed.append(ins.args)
        elif ins.keyword in ("ENTRYPOINT", "CMD"):
            setattr(stage, ins.keyword.lower(), json.loads(ins.args))
        elif ins.keyword == "HEALTHCHECK":
            kind, _, form = ins.args.partition(" ")
            assert kind == "CMD", f"{where}: expected HEALTHCHECK ... CMD [...]"
            stage.healthcheck = json.loads(form)
        else:
            raise AssertionError(f"{where}: this check does not know {ins.keyword}")
    assert stage is not None, "the Dockerfile has no FROM"
    return stage


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Stage:
    return run_dockerfile(tmp_path_factory.mktemp("image"))


def test_the_final_image_runs_riskgate_serve_as_a_user_other_than_root(image: Stage) -> None:
    assert image.user == "10001"
    assert "useradd --system --uid 10001 " in DOCKERFILE.read_text()
    assert image.entrypoint[:2] == ["riskgate", "serve"]
    assert image.exposed == ["8000"]


def installed(venv: Path) -> set[str]:
    listed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
                            capture_output=True, text=True, check=True)
    return {package["name"].lower().replace("_", "-") for package in json.loads(listed.stdout)}


def test_the_final_image_adds_riskgate_and_its_runtime_dependencies_only(image: Stage) -> None:
    # The build stage installs nothing into its Python: it stands for the bare base image.
    base = installed(image.venv.parent.parent / "build" / "venv")
    added = installed(image.venv) - base
    assert {"riskgate", "uvicorn", "redis", "hiredis", "orjson"} <= added
    assert not added & {"setuptools", "wheel", "cython", "pip"}, added
    assert not (image.root / "tmp" / "wheels").exists()  # removed in the same layer


def test_the_image_starts_from_its_environment_and_passes_its_healthcheck(
    image: Stage, redis_url: str
) -> None:
    port = str(free_port())
    # The container listens on 0.0.0.0:8000; here a free port on 127.0.0.1 stands in.
    local = {"8000": port, "0.0.0.0": "127.0.0.1"}
    command = [local.get(w, w) for w in image.translate(image.entrypoint + image.cmd)]
    env = {**os.environ, **image.env, "RISKGATE_STORE": redis_url,
           "RISKGATE_SECRET": "container-test-secret-0123"}
    log = image.root / "riskgate.log"
    with log.open("wb") as output:
        server = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        check = [w.replace(":8000/", f":{port}/") for w in image.translate(image.healthcheck)]
        for _ in range(100):
            assert server.poll() is None, log.read_text()
            if subprocess.run(check, capture_output=True, check=False).returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the HEALTHCHECK command did not pass within 10 s")
        ready = subprocess.run([*check[:2], check[2].replace("/healthz", "/readyz")],
                               capture_output=True, check=False)
        assert ready.returncode == 0, "/readyz: the store in RISKGATE_STORE was not reached"
    finally:
        stop_process(server)


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint")
    if hadolint is None:
        pytest.fail("hadolint not found; it comes with the test extras: pip install -e '.[test]'",
                    pytrace=False)
    linted = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True,
                            check=False)
    assert linted.returncode == 0, linted.stdout + linted.stderr
