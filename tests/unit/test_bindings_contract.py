"""The operator ↔ app environment contract, from the golden table the Rust tests read too."""

import json
from pathlib import Path

import pytest
from cello.bindings import KINDS, env_prefix, queue_bindings

CONTRACT = json.loads((Path(__file__).resolve().parents[1] / "operator" / "env-contract.json").read_text())
# Where the binding spec names a field differently from the environment contract.
SPEC_FIELDS = {
    "bootstrapServers": "bootstrap_servers",
    "topic": "topic",
    "consumerGroup": "group",
    "queueName": "queue",
    "address": "address",
    "listName": "list",
    "streamName": "stream",
    "queueUrl": "queue_url",
    "region": "region",
    "endpoint": "endpoint",
}
SECRET_FIELDS = {
    "passwordSecret": "password",
    "hostSecret": "url",
    "accessKeyIdSecret": "access_key_id",
    "secretAccessKeySecret": "secret_access_key",
}


def _environ(entries):
    env = {}
    for e in entries:
        # Secret references become a marker value, as the kubelet would resolve them.
        env[e["name"]] = e.get("value", f"secret:{e.get('secret', {}).get('name')}/{e.get('secret', {}).get('key')}")
    return env


@pytest.mark.parametrize("case", CONTRACT["queues"], ids=lambda c: c["binding"]["name"])
def test_every_golden_binding_reads_back(case):
    binding = case["binding"]
    env = _environ(case["env"])
    env["CELLO_QUEUES"] = binding["name"]
    got = queue_bindings(env)[binding["name"]]
    assert got.kind == binding["kind"]
    for spec_key, field in SPEC_FIELDS.items():
        if spec_key in binding:
            assert got.settings[field] == binding[spec_key], (field, got.settings)
    for secret_key, field in SECRET_FIELDS.items():
        if secret_key in binding:
            ref = binding[secret_key]
            assert got.settings[field] == f"secret:{ref['name']}/{ref['key']}"
    # Every variable of the golden table is one this reader knows.
    prefix = env_prefix(binding["name"])
    known = {prefix + "KIND", *(prefix + k.upper() for k in got.settings)}
    assert {e["name"] for e in case["env"]} == known
    # ... and the binding's attributes read them.
    for field, value in got.settings.items():
        assert getattr(got, field) == value


def test_every_kind_and_field_is_in_the_golden_table():
    """Each kind cello.bindings reads appears in the table, and each field it reads is set by
    some case: a field the operator never writes (or a kind it cannot bind) is caught here."""
    seen: dict[str, set[str]] = {}
    for case in CONTRACT["queues"]:
        prefix = env_prefix(case["binding"]["name"])
        fields = seen.setdefault(case["binding"]["kind"], set())
        fields.update(e["name"][len(prefix) :].lower() for e in case["env"])
    assert set(seen) == set(KINDS)
    for kind, fields in KINDS.items():
        assert set(fields) <= seen[kind], (kind, set(fields) - seen[kind])


def test_pod_env_lists_the_bindings():
    assert "CELLO_QUEUES" in CONTRACT["podEnv"]


def test_unknown_kind_is_a_clear_error():
    with pytest.raises(ValueError, match="CELLO_QUEUE_X_KIND"):
        queue_bindings({"CELLO_QUEUES": "x", "CELLO_QUEUE_X_KIND": "nats"})
    assert queue_bindings({}) == {}


def test_redis_binding_shape_must_match_the_consumer():
    """`cello consume --queue`: a stream binding gives stream and group; a list binding on a
    stream consumer (or the reverse) is refused rather than silently switching modes."""
    from cello.messaging import ConsumerSpec, apply_binding

    def handler(message):
        return None

    stream = ConsumerSpec(handler=handler, kind="redis", source="placeholder", group="mine", mode="stream")
    listed = ConsumerSpec(handler=handler, kind="redis", source="placeholder", mode="list")
    env = {"CELLO_QUEUES": "ev,ls",
           "CELLO_QUEUE_EV_KIND": "redis", "CELLO_QUEUE_EV_ADDRESS": "r:6379", "CELLO_QUEUE_EV_STREAM": "events",
           "CELLO_QUEUE_EV_GROUP": "shop-ev", "CELLO_QUEUE_EV_PASSWORD": "pw",
           "CELLO_QUEUE_LS_KIND": "redis", "CELLO_QUEUE_LS_ADDRESS": "r:6379",
           "CELLO_QUEUE_LS_LIST": "tasks"}  # fmt: skip
    b = queue_bindings(env)
    got = apply_binding(stream, b["ev"])
    assert (got.source, got.group, got.mode, got.url) == ("events", "shop-ev", "stream", "redis://:pw@r:6379")
    got = apply_binding(listed, b["ls"])
    assert (got.source, got.group, got.mode, got.url) == ("tasks", None, "list", "redis://r:6379")
    with pytest.raises(ValueError, match="is a Redis list, but .* reads a stream"):
        apply_binding(stream, b["ls"])
    with pytest.raises(ValueError, match="is a Redis stream, but .* reads a list"):
        apply_binding(listed, b["ev"])


def test_sqs_binding_reads_its_variables():
    env = {"CELLO_QUEUES": "jobs", "CELLO_QUEUE_JOBS_KIND": "sqs",
           "CELLO_QUEUE_JOBS_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/1/jobs",
           "CELLO_QUEUE_JOBS_REGION": "eu-west-1", "CELLO_QUEUE_JOBS_ACCESS_KEY_ID": "AKIA",
           "CELLO_QUEUE_JOBS_SECRET_ACCESS_KEY": "s"}  # fmt: skip
    b = queue_bindings(env)["jobs"]
    assert (b.kind, b.queue_url, b.region) == ("sqs", env["CELLO_QUEUE_JOBS_QUEUE_URL"], "eu-west-1")
    assert b.endpoint is None
    assert (b.access_key_id, b.secret_access_key) == ("AKIA", "s")
