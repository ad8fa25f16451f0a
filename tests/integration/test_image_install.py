"""The Dockerfile's steps, run one by one in a fresh folder standing in for the image's filesystem.

No Docker engine runs in CI and no registry is reachable, so the image is not built in the suite (it
was built once by hand with buildah, on a Debian base made with mmdebstrap: slower than CI can
afford). Instead each instruction of the Dockerfile is read and mirrored here: each stage (FROM)
gets a stand-in root of its own, WORKDIR, COPY (``--from`` a stage built here: from its root) and
ENV on it, the build and install steps with a fresh venv's pip in place of the base image's (the
build with the session's cargo target, where the release's build compiled the same crates: see
tests/release.py), and ENTRYPOINT + CMD run as the container runs them (from the last WORKDIR, with
the final stage's environment). The Rust toolchain that the build stage copies from the toolchain's
image, and the C linker it installs with apt-get, are this machine's own (the README's set-up needs
both). An instruction or a RUN step that this test does not know fails it, so the Dockerfile and
this test cannot drift apart silently.
"""

from __future__ import annotations

import glob
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import adaptloop
from adaptloop.schemas import ModelVersion, OutcomeEvent, PredictionEvent
from adaptloop.schemas.topics import MODEL_UPDATES
from adaptloop.streams import EventProducer
from adaptloop.streams.versions import read_all
from adaptloop.testing import free_port
from adaptloop.worker import stop_worker_process
from tests.release import Release

# a fresh venv installs on a loaded machine
pytestmark = [pytest.mark.kafka, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
IGNORED = {"USER", "VOLUME", "EXPOSE"}  # the account, the mounts
# the stage (the Rust toolchain's image) whose files are this machine's own toolchain
TOOLCHAIN = "rust"
# where that toolchain lives in the image: here, where it is
TOOLCHAIN_ENV = {"RUSTUP_HOME", "CARGO_HOME"}


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined and comments dropped."""
    steps: list[tuple[str, str]] = []
    pending = ""
    for line in dockerfile.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        name, _, args = pending.strip().partition(" ")
        steps.append((name.upper(), " ".join(args.split())))
        pending = ""
    return steps


@dataclass
class Image:
    """What the Dockerfile's steps made: a root folder per stage (``root``: the current one, the
    image's at the end), a venv for the base's Python, the config."""

    root: Path
    venv: Path
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    stages: dict[str, Path] = field(default_factory=dict)
    # the build steps' environment: the session's cargo target, whose crates the build finds fresh
    build_env: dict[str, str] = field(default_factory=dict)

    def inside(self, path: str) -> Path:
        """A path of the image, in the stand-in root."""
        return self.root / path.lstrip("/")

    def run_step(self, step: str) -> None:
        """One `&&`-part of a RUN instruction, mirrored; an unknown one fails the test."""
        words = shlex.split(step)
        while words and words[0].startswith("PATH=/usr/local/cargo/bin:"):
            # the toolchain's folder first on PATH: here, cargo is on this machine's PATH
            words = words[1:]
        if words[0] in ("useradd", "chown"):
            return  # the image's account: the test runs as the CI's user
        if words[:2] == ["mkdir", "-p"]:
            for path in words[2:]:
                self.inside(path).mkdir(parents=True, exist_ok=True)
            return
        if words[:2] == ["rm", "-rf"]:
            for path in words[2:]:
                shutil.rmtree(self.inside(path))
            return
        if words[:2] == ["apt-get", "update"]:
            return
        if words[:4] == ["apt-get", "install", "-y", "--no-install-recommends"]:
            # the core's linker: this machine's own
            assert set(words[4:]) == {"gcc", "libc6-dev"}, words
            assert shutil.which("cc"), "the compiled core needs a C linker (cc)"
            return
        if words[:2] in (["pip", "install"], ["pip", "wheel"]):
            # The base image's pip is the venv's; --no-cache-dir only keeps the image small (CI's
            # cache is warm).
            args: list[str] = []
            for word in words[2:]:
                if word == "--no-cache-dir":
                    continue
                # a path of the image: in the stand-in root (a wheel's name globbed)
                if word.startswith("/"):
                    args += sorted(glob.glob(str(self.inside(word)))) or [str(self.inside(word))]
                else:
                    args.append(word)
            subprocess.run(
                [str(self.venv / "bin" / "pip"), words[1], "-q", *args],
                cwd=self.workdir,
                env={**os.environ, **self.build_env},
                check=True,
            )
            return
        pytest.fail(
            f"the Dockerfile's step {step!r} is not mirrored by {Path(__file__).name}: add it there"
        )

    def apply(self, name: str, args: str) -> None:
        if name in IGNORED:
            return
        # a new stage: a root of its own (a fresh venv stands in for the Python base)
        if name == "FROM":
            image, _, stage = args.partition(" AS ")
            assert image.split(":")[0] in ("python", "rust"), image
            self.root = self.root.parent / f"stage-{len(self.stages)}"
            self.root.mkdir()
            self.workdir, self.env = self.root, {}
            self.stages[stage or str(len(self.stages))] = self.root
        elif name == "WORKDIR":
            self.workdir = self.inside(args)
            self.workdir.mkdir(parents=True, exist_ok=True)
        elif name == "COPY" and args.startswith("--from="):
            stage, source, target = args.removeprefix("--from=").split()
            if stage == TOOLCHAIN:
                assert shutil.which("cargo"), "the compiled core needs the Rust toolchain (cargo)"
                return
            shutil.copytree(self.stages[stage] / source.lstrip("/"), self.inside(target))
        elif name == "COPY":
            *sources, target = args.split()
            destination = self.workdir / target
            for source in sources:
                if (ROOT / source).is_dir():
                    shutil.copytree(
                        ROOT / source,
                        destination,
                        ignore=shutil.ignore_patterns("__pycache__", "target", "*.so"),
                    )
                else:
                    destination.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(ROOT / source, destination)
        elif name == "RUN":
            for step in args.split(" && "):
                self.run_step(step)
        elif name == "ENV":
            for pair in shlex.split(args):
                key, value = pair.split("=", 1)
                if key not in TOOLCHAIN_ENV:
                    self.env[key] = str(self.inside(value)) if value.startswith("/") else value
        elif name == "ENTRYPOINT":
            self.entrypoint = json.loads(args)
        elif name == "CMD":
            self.cmd = json.loads(args)
        else:
            pytest.fail(
                f"the Dockerfile's instruction {name} is not mirrored by "
                f"{Path(__file__).name}: add it there"
            )

    def run(
        self, *args: str, extra_env: dict[str, str], **popen: object
    ) -> subprocess.Popen[bytes]:
        """The container's command (ENTRYPOINT + ``args``, or + CMD) from the last WORKDIR with its
        environment."""
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ADAPTLOOP_", "PYTHON", "VIRTUAL_ENV"))
        }
        base["PATH"] = f"{self.venv / 'bin'}:{base['PATH']}"
        argv = [*self.entrypoint, *(args or self.cmd)]
        return subprocess.Popen(
            argv, cwd=self.workdir, env={**base, **self.env, **extra_env}, **popen
        )  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def image(release: Release, tmp_path_factory: pytest.TempPathFactory) -> Image:
    """The Dockerfile's stages, replayed; the build stage's ``pip wheel`` compiles the core into the
    session's cargo target, where the release's build (``release``) compiled the same sources."""
    work = tmp_path_factory.mktemp("image")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    built = Image(root=work / "root", venv=venv, workdir=work / "root", build_env=release.cargo_env)
    for name, args in instructions(ROOT / "Dockerfile"):
        built.apply(name, args)
    assert built.entrypoint == ["adaptloop"] and built.cmd == ["worker"]
    return built


def test_the_image_reports_its_version(image):
    process = image.run("--version", extra_env={}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0, out.decode()
    assert out.decode().strip() == f"adaptloop {adaptloop.__version__}"


def test_the_image_runs_a_worker_that_learns(image, kafka_bootstrap, topic_prefix):
    """The image's default command, configured as docker-compose.yml configures it, learns what
    services send."""
    env = {
        "ADAPTLOOP_BOOTSTRAP": kafka_bootstrap,
        "ADAPTLOOP_MODELS": '[{"name": "churn", "recipe": "logistic", "checkpoint_every": 100}]',
        "ADAPTLOOP_TOPIC_PREFIX": topic_prefix,
        "ADAPTLOOP_GROUP": f"image-{uuid.uuid4().hex[:6]}",
        "ADAPTLOOP_METRICS_PORT": str(free_port()),
    }
    home = Path(image.env["ADAPTLOOP_HOME"])
    log_file = image.root / "worker.log"
    with open(log_file, "wb") as log:
        worker = image.run(
            extra_env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        start = datetime.now(UTC)
        with EventProducer(kafka_bootstrap, topic_prefix=topic_prefix) as producer:
            for i in range(300):
                at = start + timedelta(milliseconds=i)
                producer.send(
                    PredictionEvent(
                        decision_id=f"d{i}",
                        model="churn",
                        model_version="v0",
                        features={"tenure": i % 13},
                        timestamp=at,
                    )
                )
                producer.send(
                    OutcomeEvent(
                        decision_id=f"d{i}", label=i % 13 < 4, source="billing", timestamp=at
                    )
                )
        deadline, learned = time.monotonic() + 180, 0
        while learned < 300 and time.monotonic() < deadline and worker.poll() is None:
            versions = read_all(kafka_bootstrap, MODEL_UPDATES, topic_prefix)
            learned = max(
                (v.examples_seen for v in versions if isinstance(v, ModelVersion)), default=0
            )
            time.sleep(0.5)
        assert learned == 300, log_file.read_text(errors="replace")[-3000:]
        # the image's home (ENV ADAPTLOOP_HOME) holds its state
        assert (home / "keys" / "model-signing.pub").exists()
    finally:
        stop_worker_process(worker)
