"""Models in an object store: a worker stores its versions in S3 (a real S3 API server on
127.0.0.1), and a ModelClient on "another host" (its own home, no access to the worker's disk, only
the worker's public key) serves each one; a version changed in the bucket is refused, never
loaded."""

from __future__ import annotations

import pickle
import shutil

import pytest
from river import datasets

from adaptloop import ModelClient
from adaptloop.learners.signing import ModelKeys
from adaptloop.learners.spec import LearnerSpec
from adaptloop.learners.storage import Storage
from adaptloop.learners.store import version_of
from adaptloop.schemas.errors import ModelRefused
from adaptloop.settings import Settings

from .loop_helpers import learn_all, loop_settings, running_worker

pytestmark = pytest.mark.kafka


def test_a_client_on_another_host_serves_versions_from_the_object_store(
    kafka_bootstrap, s3_bucket, tmp_path
):
    spec = LearnerSpec(
        name="phishing", recipe="logistic", checkpoint_every=200, checkpoint_seconds=1
    )
    settings = loop_settings(kafka_bootstrap, tmp_path / "worker-home", [spec], partitions=2)
    keys = tmp_path / "deployment-keys"
    # a store shared by hosts: the deployment's key, made once (`adaptloop keys create`)
    ModelKeys.create(keys)
    settings = settings.model_copy(
        update={"store": s3_bucket, "model_signing_key": keys / "model-signing.key"}
    )
    rows = list(datasets.Phishing())
    with running_worker(settings, tmp_path / "worker.log") as worker:
        latest = max(learn_all(settings, worker, rows), key=lambda v: v.examples_seen)
        # a URI for any host
        assert latest.uri.startswith(s3_bucket.split("?")[0] + "/phishing/versions/")
        assert not (tmp_path / "worker-home" / "models").exists()  # nothing on the worker's disk

        # Another host: its own home, the store's URI and the deployment's public key, nothing else.
        public_key = tmp_path / "other-host" / "model-signing.pub"
        public_key.parent.mkdir()
        shutil.copy(keys / "model-signing.pub", public_key)
        client_settings = Settings(
            bootstrap=kafka_bootstrap,
            topic_prefix=settings.topic_prefix,
            home=tmp_path / "other-host" / "home",
            store=s3_bucket,
            model_verify_key=public_key,
        )
        with ModelClient.from_settings("phishing", client_settings) as client:
            assert client.wait_for(lambda served: served.version == latest.version, timeout=60)
            x, _ = rows[0]
            assert client.predict(x).model_version == latest.version

        # A version changed in the bucket: refused before it is unpickled.
        storage = Storage(s3_bucket)
        key = f"phishing/versions/{latest.version}.pkl"
        data = bytearray(storage.read(key))
        data[-5] ^= 1
        storage.write(key, bytes(data))
        with pytest.raises(Exception, match="corrupt"):
            client_settings.model_store().load_bytes("phishing", latest.version)
        planted = pickle.dumps({"not": "the worker's"})  # under its own hash, with no signature
        storage.write(f"phishing/versions/{version_of(planted)}.pkl", planted)
        with pytest.raises(ModelRefused, match="no signature"):
            client_settings.model_store().load_bytes("phishing", version_of(planted))
