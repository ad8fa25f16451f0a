from __future__ import annotations

import socket
from pathlib import Path

import pytest

from adaptloop.localkafka import LocalKafka
from adaptloop.schemas.errors import KafkaLaunchError
from adaptloop.settings import Settings


def test_environment_overrides_defaults(monkeypatch):
    monkeypatch.setenv("ADAPTLOOP_BOOTSTRAP", "kafka-1:9092,kafka-2:9092")
    monkeypatch.setenv("ADAPTLOOP_PARTITIONS", "12")
    settings = Settings()
    assert settings.bootstrap_address == "kafka-1:9092,kafka-2:9092" and settings.partitions == 12


def test_toml_file_is_read_from_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "adaptloop.toml").write_text('kafka_port = 29092\ntopic_prefix = "staging."\n')
    settings = Settings()
    assert settings.bootstrap_address == "127.0.0.1:29092" and settings.topic_prefix == "staging."


def test_the_default_home_is_the_users_from_any_folder(tmp_path, monkeypatch):
    from adaptloop import ClientSettings

    monkeypatch.delenv("ADAPTLOOP_HOME", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "ana"))
    homes = set()
    for folder in (tmp_path / "worker", tmp_path / "service"):
        folder.mkdir()
        monkeypatch.chdir(folder)
        homes |= {Settings().home, ClientSettings().home}
    assert homes == {tmp_path / "ana" / ".local" / "share" / "adaptloop"}
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert Settings().home == ClientSettings().home == tmp_path / "data" / "adaptloop"
    # not absolute: ignored, as the XDG spec says
    monkeypatch.setenv("XDG_DATA_HOME", "relative/data")
    assert Settings().home == tmp_path / "ana" / ".local" / "share" / "adaptloop"
    monkeypatch.setenv("ADAPTLOOP_HOME", "~/loop")
    assert Settings().home == tmp_path / "ana" / "loop"
    (tmp_path / "service" / "adaptloop.toml").write_text('home = "/srv/adaptloop"\n')
    monkeypatch.delenv("ADAPTLOOP_HOME")
    # ./adaptloop.toml is still read from the folder
    assert ClientSettings().home == Path("/srv/adaptloop")


def test_launcher_refuses_clearly_without_java(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    kafka = LocalKafka(tmp_path / "data", tmp_path / "cache", port=1, controller_port=2)
    with pytest.raises(KafkaLaunchError, match="Java 17\\+ is needed"):
        kafka.up()
    with pytest.raises(KafkaLaunchError, match="Maven"):
        kafka.install()
    assert not Path(tmp_path / "data" / "broker.pid").exists()


def test_launcher_refuses_a_port_taken_by_another_process(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        kafka = LocalKafka(
            tmp_path / "data", tmp_path / "cache", port=port, controller_port=port + 1
        )
        with pytest.raises(KafkaLaunchError, match=f"127.0.0.1:{port} \\(broker port\\) is taken"):
            kafka.up()


def test_a_worker_with_a_changed_recipe_stops_before_it_starts_anything(tmp_path):
    from adaptloop.learners.online import OnlineLearner
    from adaptloop.learners.spec import LearnerSpec
    from adaptloop.schemas.errors import SpecChanged
    from adaptloop.worker import run_worker

    learned = LearnerSpec(name="churn", recipe="logistic")
    settings = Settings(
        home=tmp_path,
        bootstrap="127.0.0.1:1",
        models=[learned.model_copy(update={"recipe": "hoeffding"})],
    )
    # (its key made: a new store in its home)
    settings.worker_model_store().checkpoint(OnlineLearner(learned))
    with pytest.raises(SpecChanged, match=r"remove .*churn to start 'churn' over"):
        run_worker(settings, "learn")  # no broker is asked: it fails first


def test_the_settings_reference_is_up_to_date():
    from adaptloop.settings import reference

    path = Path(__file__).resolve().parents[3] / "docs" / "settings.md"
    assert path.read_text() == reference() + "\n", (
        "run: adaptloop settings --reference > docs/settings.md"
    )


def test_every_setting_says_what_it_is():
    from adaptloop.learners.guardrails import GuardrailLimits
    from adaptloop.learners.spec import DriftSpec, LearnerSpec

    for model in (Settings, LearnerSpec, DriftSpec, GuardrailLimits):
        undocumented = [name for name, field in model.model_fields.items() if not field.description]
        assert not undocumented, f"{model.__name__}: {undocumented} have no description"
