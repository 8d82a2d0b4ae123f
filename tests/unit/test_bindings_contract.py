"""The operator ↔ app environment contract, from the golden table the Rust tests read too."""

import json
from pathlib import Path

import pytest
from cello.bindings import env_prefix, queue_bindings

CONTRACT = json.loads((Path(__file__).resolve().parents[1] / "operator" / "env-contract.json").read_text())
# Where the binding spec names a field differently from the environment contract.
SPEC_FIELDS = {
    "bootstrapServers": "bootstrap_servers",
    "topic": "topic",
    "consumerGroup": "group",
    "queueName": "queue",
    "address": "address",
    "listName": "list",
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
    for secret_key, field in (("passwordSecret", "password"), ("hostSecret", "url")):
        if secret_key in binding:
            ref = binding[secret_key]
            assert got.settings[field] == f"secret:{ref['name']}/{ref['key']}"
    # Every variable of the golden table is one this reader knows.
    prefix = env_prefix(binding["name"])
    known = {prefix + "KIND", *(prefix + k.upper() for k in got.settings)}
    assert {e["name"] for e in case["env"]} == known


def test_pod_env_lists_the_bindings():
    assert "CELLO_QUEUES" in CONTRACT["podEnv"]


def test_unknown_kind_is_a_clear_error():
    with pytest.raises(ValueError, match="CELLO_QUEUE_X_KIND"):
        queue_bindings({"CELLO_QUEUES": "x", "CELLO_QUEUE_X_KIND": "nats"})
    assert queue_bindings({}) == {}


def test_sqs_binding_reads_its_variables():
    env = {"CELLO_QUEUES": "jobs", "CELLO_QUEUE_JOBS_KIND": "sqs",
           "CELLO_QUEUE_JOBS_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/1/jobs",
           "CELLO_QUEUE_JOBS_REGION": "eu-west-1", "CELLO_QUEUE_JOBS_ACCESS_KEY_ID": "AKIA",
           "CELLO_QUEUE_JOBS_SECRET_ACCESS_KEY": "s"}  # fmt: skip
    b = queue_bindings(env)["jobs"]
    assert (b.kind, b.queue_url, b.region) == ("sqs", env["CELLO_QUEUE_JOBS_QUEUE_URL"], "eu-west-1")
    assert b.endpoint_url is None
    assert (b.access_key_id, b.secret_access_key) == ("AKIA", "s")
