"""The consumer pods the operator builds, run for real (issue 15): each consumer Deployment's
exact command line and environment from the committed snapshots (operator/tests/snapshots/,
which `cargo test -p cello-operator` keeps equal to what the reconciler renders) started as a
local `cello consume` against the local broker (Redis 127.0.0.1:6379, RabbitMQ 127.0.0.1:5672).
Its probes and scrape target are fetched where the Deployment, the annotations and the
PodMonitor say, and a message published to the bound list / stream / queue is processed.

What the kubelet would do differently is done here explicitly, and nothing else: Secret
references resolve to the local broker's credentials, the cluster address `redis:6379` is
the local Redis, the ConfigMap is a local file, and the admin port is a free one.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time
import uuid

import pytest
from test_pod_contract import ROOT, cello_bin, docs, find, free_port, get, need, start, stop, wait_until_serving

__all__ = ["cello_bin"]

REDIS = ("127.0.0.1", 6379)
RABBITMQ = ("127.0.0.1", 5672)
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2f"
# Secret (name, key) → what the kubelet would put in the variable.
SECRETS = {("rabbit", "url"): AMQP_URL, ("redis", "password"): ""}
# Cluster addresses of the fixtures → the local brokers.
ADDRESSES = {"redis:6379": f"{REDIS[0]}:{REDIS[1]}"}

WORKERS = """
import json
import redis
from cello.messaging import rabbitmq_consumer, redis_consumer

r = redis.Redis(host="127.0.0.1", port=6379)

# The decorators' names and brokers are placeholders: `--queue` binds the real ones.
@redis_consumer("placeholder-list")
async def mail(message):
    r.set("podtest:done:" + message.text, "mailer")

@redis_consumer("placeholder-stream", group="placeholder")
async def audit(message):
    r.set("podtest:done:" + message.json()["id"], "audit")

@rabbitmq_consumer("placeholder-queue", url="amqp://nobody:wrong@127.0.0.1:1/")
async def job(message):
    r.set("podtest:done:" + message.json()["id"], "jobber")

def fulfil(message):  # the Kafka consumer of the fixture: not run here
    raise NotImplementedError
"""

PRODUCER = """
import asyncio, sys
from cello.config import RabbitMQConfig, RedisConfig
from cello.messaging import Producer

async def main():
    kind, url, dest, mode, body = sys.argv[1:]
    config = RabbitMQConfig(url=url) if kind == "rabbitmq" else RedisConfig(url=url)
    p = await (Producer.connect(config) if kind == "rabbitmq" else Producer.connect(config, mode=mode))
    await p.send(dest, body)
    await p.close()

asyncio.run(main())
"""


def require(addr: tuple[str, int], name: str) -> None:
    import socket

    try:
        socket.create_connection(addr, timeout=1).close()
    except OSError:
        need(f"{name} is not running on {addr[0]}:{addr[1]}")


class ConsumerPod:
    """The `consumer` container of Deployment `shop-<name>` in snapshot `stem`."""

    def __init__(self, stem: str, name: str, workdir: pathlib.Path):
        self.objs = docs(stem)
        self.deployment = find(self.objs, "Deployment", f"shop-{name}")
        self.template = self.deployment["spec"]["template"]
        pod = self.template["spec"]
        (self.container,) = pod["containers"]
        assert self.container["name"] == "consumer"
        self.ports = {p["name"]: p["containerPort"] for p in self.container["ports"]}

        env = {}
        for e in self.container["env"]:
            if "value" in e:
                env[e["name"]] = e["value"]
            else:
                ref = e["valueFrom"]["secretKeyRef"]
                env[e["name"]] = SECRETS[(ref["name"], ref["key"])]
        for k, v in env.items():
            if k.endswith("_ADDRESS"):
                env[k] = ADDRESSES[v]
        cm = find(self.objs, "ConfigMap", "shop-config")
        (workdir / "config").mkdir(exist_ok=True)
        (workdir / "config" / "cello.yaml").write_text(cm["data"]["cello.yaml"])
        assert env["CELLO_CONFIG"].endswith("/cello.yaml")
        env["CELLO_CONFIG"] = str(workdir / "config" / "cello.yaml")
        self.env = env
        args = self.container["args"]
        self.binding = args[args.index("--queue") + 1]
        self.prefix = "CELLO_QUEUE_" + self.binding.upper().replace("-", "_") + "_"
        self.kind = env[self.prefix + "KIND"]

        argv = self.container["command"] + self.container["args"]
        assert argv[:2] == ["cello", "consume"], argv
        i = argv.index("--admin-port")
        assert int(argv[i + 1]) == self.ports["admin"], "--admin-port is the container port"
        assert argv[argv.index("--host") + 1] == "0.0.0.0", "reachable from the kubelet"
        self.port = free_port()
        argv[i + 1] = str(self.port)
        self.argv = argv

    def local(self, port_name_or_number) -> int:
        number = self.ports.get(port_name_or_number, port_name_or_number)
        assert int(number) == self.ports["admin"], f"{port_name_or_number} is not the admin port"
        return self.port

    def probes(self) -> list[tuple[str, int, str]]:
        out = []
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = self.container.get(kind)
            assert probe and "httpGet" in probe, f"{kind} missing on the consumer"
            assert probe["httpGet"].get("scheme", "HTTP") == "HTTP"
            out.append((kind, self.local(probe["httpGet"]["port"]), probe["httpGet"]["path"]))
        return out

    def scrape_targets(self) -> list[tuple[int, str]]:
        """Annotations on the pod, or a PodMonitor selecting it — exactly one of them."""
        ann = self.template["metadata"].get("annotations", {})
        labels = self.template["metadata"]["labels"]
        out = []
        if ann.get("prometheus.io/scrape") == "true":
            out.append((self.local(int(ann["prometheus.io/port"])), ann["prometheus.io/path"]))
        for m in self.objs:
            if m["kind"] == "PodMonitor" and m["spec"]["selector"]["matchLabels"].items() <= labels.items():
                for ep in m["spec"]["podMetricsEndpoints"]:
                    out.append((self.local(ep["port"]), ep["path"]))
            if m["kind"] == "ServiceMonitor":
                svc = find(self.objs, "Service", "shop")
                assert not svc["spec"]["selector"].items() <= labels.items(), "no Service selects consumer pods"
        assert len(out) == 1, out
        return out

    def publish(self, workdir: pathlib.Path, body: str) -> None:
        """Publish `body` where the binding says, as a producer process."""
        p = self.prefix
        if self.kind == "redis":
            url, dest = f"redis://{self.env[p + 'ADDRESS']}", self.env.get(p + "LIST") or self.env[p + "STREAM"]
            mode = "list" if p + "LIST" in self.env else "stream"
        else:
            url, dest, mode = self.env[p + "URL"], self.env[p + "QUEUE"], "queue"
        (workdir / "producer.py").write_text(PRODUCER)
        out = subprocess.run([sys.executable, str(workdir / "producer.py"), self.kind, url, dest, mode, body],
                             capture_output=True, text=True, timeout=30)  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr


# Brokers `cello consume` has a client for; Kafka and SQS consumers join when theirs are built.
BUILT = ("redis", "rabbitmq")
CASES = [
    ("consumers", "mailer"),  # Redis list, PodMonitor
    ("consumers", "audit"),  # Redis stream + consumer group, PodMonitor
    ("consumers", "jobber"),  # RabbitMQ, PodMonitor
    ("consumers-annotations", "mailer"),  # scrape annotations
    ("consumers-annotations", "jobber"),
    ("keda-redis-streams", "audit"),  # replicas left to KEDA; the pod is the same
]


@pytest.mark.parametrize(("stem", "name"), CASES, ids=[f"{s}-{n}" for s, n in CASES])
def test_consumer_pod_serves_its_probes_and_processes_a_message(stem, name, cello_bin, tmp_path):
    import redis as redis_py

    pod = ConsumerPod(stem, name, tmp_path)
    require(REDIS, "Redis")  # the handlers record what they processed there
    if pod.kind == "rabbitmq":
        require(RABBITMQ, "RabbitMQ")
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "__init__.py").write_text("")
    (tmp_path / "shop" / "workers.py").write_text(WORKERS)
    env = {"PATH": f"{cello_bin.parent}:/usr/bin:/bin", "LANG": "C.UTF-8", **pod.env}
    env.pop("HOME", None)
    log = tmp_path / "consume.log"
    proc = start([str(cello_bin)] + pod.argv[1:], env, tmp_path, log)
    r = redis_py.Redis(*REDIS, decode_responses=True)
    token = uuid.uuid4().hex
    try:
        wait_until_serving(proc, pod.port, log)
        for kind, port, path in pod.probes():
            deadline = time.monotonic() + 20
            while (code := get(port, path)[0]) != 200 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert code == 200, f"{stem}/{name}: {kind} {path} -> {code}\n{log.read_text()[-3000:]}"
        body = token if pod.env.get(pod.prefix + "LIST") else f'{{"id": "{token}"}}'
        pod.publish(tmp_path, body)
        deadline = time.monotonic() + 20
        while r.get("podtest:done:" + token) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert r.get("podtest:done:" + token) == name, f"not processed\n{log.read_text()[-3000:]}"
        for port, path in pod.scrape_targets():
            code, text = get(port, path)
            assert code == 200, f"{stem}/{name}: scrape {path} -> {code}"
            received = [ln for ln in text.splitlines() if ln.startswith("cello_messaging_messages_received_total")]
            assert received and float(received[0].rsplit(" ", 1)[1]) >= 1, text
        os.killpg(proc.pid, 15)
        assert proc.wait(30) == 0, log.read_text()[-3000:]
    finally:
        stop(proc)
        r.delete("podtest:done:" + token)
        r.close()


def test_every_consumer_deployment_of_the_snapshots_is_covered_or_waits_for_its_broker():
    """A new consumer fixture must be added to CASES (Kafka and SQS wait for their clients)."""
    seen = set()
    for path in sorted((ROOT / "operator" / "tests" / "snapshots").glob("*.yaml")):
        for d in docs(path.stem):
            if d["kind"] == "Deployment" and d["spec"]["template"]["spec"]["containers"][0]["name"] == "consumer":
                c = d["spec"]["template"]["spec"]["containers"][0]
                binding = c["args"][c["args"].index("--queue") + 1]
                prefix = "CELLO_QUEUE_" + binding.upper().replace("-", "_") + "_KIND"
                kind = next(e["value"] for e in c["env"] if e["name"] == prefix)
                seen.add((path.stem, d["metadata"]["name"].removeprefix("shop-"), kind))
    untested = {(s, n, k) for s, n, k in seen if (s, n) not in CASES and k in BUILT}
    assert not untested, f"consumer pods on a built broker without a run test: {sorted(untested)}"
    assert {(s, n) for s, n, _ in seen} >= set(CASES)
