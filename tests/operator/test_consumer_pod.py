"""The consumer pods the operator builds, run for real (issue 15): each consumer Deployment's
exact command line and environment from the committed snapshots (operator/tests/snapshots/,
which `cargo test -p cello-operator` keeps equal to what the reconciler renders) started as a
local `cello consume` against a local broker: Redis 127.0.0.1:6379, RabbitMQ 127.0.0.1:5672,
Kafka as librdkafka's mock cluster (a process this module starts) and SQS as a moto server
(likewise). Its probes and scrape target are fetched where the Deployment, the annotations and
the PodMonitor say, and a message published to the bound list / stream / queue / topic is
processed.

What the kubelet would do differently is done here explicitly, and nothing else: Secret
references resolve to the local broker's credentials, the cluster addresses (`redis:6379`,
`kafka:9092`, `http://localstack:4566`, SQS's regional endpoint) are the local brokers, the
ConfigMap is a local file, and the admin port is a free one. An SQS binding without key
Secrets runs on the pod's identity: here what EKS's IRSA webhook injects (`AWS_ROLE_ARN`, a
projected token file, `AWS_REGION`), with STS being moto too, and moto's request log shows
the token went to `AssumeRoleWithWebIdentity` and the SQS calls were signed with its keys.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
import urllib.parse
import uuid

import pytest
from test_pod_contract import ROOT, cello_bin, docs, find, free_port, get, need, start, stop, wait_until_serving

__all__ = ["cello_bin"]

REDIS = ("127.0.0.1", 6379)
RABBITMQ = ("127.0.0.1", 5672)
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2f"
# Secret (name, key) → what the kubelet would put in the variable (moto takes any key).
SECRETS = {("rabbit", "url"): AMQP_URL, ("redis", "password"): "", ("aws", "access-key-id"): "testing",
           ("aws", "secret-access-key"): "testing"}  # fmt: skip
ROLE_ARN = "arn:aws:iam::123456789012:role/shop-consumer"

WORKERS = """
import json
import redis
from cello.messaging import kafka_consumer, rabbitmq_consumer, redis_consumer, sqs_consumer

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

@kafka_consumer("placeholder-topic", group="placeholder", brokers="127.0.0.1:1")
async def fulfil(message):
    r.set("podtest:done:" + message.json()["id"], "fulfil")

@sqs_consumer("http://127.0.0.1:1/000000000000/placeholder", endpoint_url="http://127.0.0.1:1")
async def bill(message):
    r.set("podtest:done:" + message.json()["id"], "billing")

# No endpoint: the binding names none (real SQS), the pod's AWS_ENDPOINT_URL does here.
@sqs_consumer("https://sqs.us-east-1.amazonaws.com/000000000000/placeholder")
async def refund(message):
    r.set("podtest:done:" + message.json()["id"], "refunds")
"""

# The snapshot `stopped` names its consumer `shop.w:run`.
W = """
from shop.workers import fulfil as run
"""

PRODUCER = """
import asyncio, sys
from cello.config import KafkaConfig, RabbitMQConfig, RedisConfig, SqsConfig
from cello.messaging import Producer

async def main():
    kind, url, dest, mode, body = sys.argv[1:]
    if kind == "redis":
        p = await Producer.connect(RedisConfig(url=url), mode=mode)
    elif kind == "sqs":  # url: the endpoint; mode: the region
        p = await Producer.connect(SqsConfig(endpoint_url=url, region=mode))
    else:
        p = await Producer.connect(KafkaConfig(brokers=url) if kind == "kafka" else RabbitMQConfig(url=url))
    await p.send(dest, body)
    await p.close()

asyncio.run(main())
"""


def local_address(value: str, addresses: dict[str, str]) -> str:
    """A cluster address (or a URL on it) of the fixtures → the local broker's."""
    for cluster, here in addresses.items():
        if value == cluster or value.startswith(cluster + "/"):
            return here + value[len(cluster) :]
    return value


@pytest.fixture(scope="module")
def kafka():
    """librdkafka's mock cluster in a process of its own: ``(bootstrap servers, create_topic)``."""
    code = (
        "import sys\n"
        "from cello._cello import KafkaMockCluster\n"
        "cluster = KafkaMockCluster(1)\n"
        "print(cluster.bootstrap_servers(), flush=True)\n"
        "for line in sys.stdin:\n"
        "    cluster.create_topic(line.strip(), 1)\n"
        "    print('ok', flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            bufsize=1)  # fmt: skip
    created: set[str] = set()
    try:
        servers = proc.stdout.readline().strip()
        assert servers, "the mock cluster did not start"

        def create_topic(name: str) -> None:
            if name in created:  # the fixtures share topic `orders`
                return
            created.add(name)
            proc.stdin.write(name + "\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "ok"

        yield servers, create_topic
    finally:
        proc.kill()
        proc.wait(5)


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    """A moto server (SQS and STS) recording every request: ``(endpoint, recording file)``."""
    exe = pathlib.Path(sys.executable).parent / "moto_server"
    if not exe.exists():
        exe = pathlib.Path(shutil.which("moto_server") or exe)
    if not exe.exists():
        need("moto_server (moto[server] of requirements-dev.txt) is not installed")
    tmp = tmp_path_factory.mktemp("moto")
    recording = tmp / "requests.jsonl"
    port = free_port()
    env = {**os.environ, "MOTO_ENABLE_RECORDING": "True", "MOTO_RECORDER_FILEPATH": str(recording)}
    with open(tmp / "moto.log", "wb") as log:
        proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT,
                                env=env)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if get(port, "/moto-api/")[0] == 200:
                break
        except OSError:  # not listening yet
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"moto_server did not start on {url}: {(tmp / 'moto.log').read_text()[-2000:]}")
        time.sleep(0.1)
    yield url, recording
    proc.terminate()
    proc.wait(10)


def moto_requests(recording: pathlib.Path, since: int) -> list[dict]:
    out = []
    for line in recording.read_text().splitlines()[since:]:
        e = json.loads(line)
        body = e.get("body") or ""
        e["body"] = base64.b64decode(body).decode("utf-8", "replace") if e.get("body_encoded") else body
        e["headers"] = {k.lower(): v for k, v in e["headers"].items()}
        out.append(e)
    return out


def recorded(recording: pathlib.Path) -> int:
    return len(recording.read_text().splitlines()) if recording.exists() else 0


def require(addr: tuple[str, int], name: str) -> None:
    import socket

    try:
        socket.create_connection(addr, timeout=1).close()
    except OSError:
        need(f"{name} is not running on {addr[0]}:{addr[1]}")


class ConsumerPod:
    """The `consumer` container of Deployment `shop-<name>` in snapshot `stem`."""

    def __init__(self, stem: str, name: str, workdir: pathlib.Path, addresses: dict[str, str]):
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
            if k.startswith("CELLO_QUEUE_"):
                env[k] = local_address(v, addresses)
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

    @staticmethod
    def kind_of(stem: str, name: str) -> str:
        (c,) = find(docs(stem), "Deployment", f"shop-{name}")["spec"]["template"]["spec"]["containers"]
        binding = c["args"][c["args"].index("--queue") + 1]
        prefix = "CELLO_QUEUE_" + binding.upper().replace("-", "_") + "_KIND"
        return next(e["value"] for e in c["env"] if e["name"] == prefix)

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
        env = dict(os.environ)
        if self.kind == "redis":
            url, dest = f"redis://{self.env[p + 'ADDRESS']}", self.env.get(p + "LIST") or self.env[p + "STREAM"]
            mode = "list" if p + "LIST" in self.env else "stream"
        elif self.kind == "kafka":
            url, dest, mode = self.env[p + "BOOTSTRAP_SERVERS"], self.env[p + "TOPIC"], "topic"
        elif self.kind == "sqs":
            url = self.env.get(p + "ENDPOINT") or self.env["AWS_ENDPOINT_URL"]
            dest, mode = self.env[p + "QUEUE_URL"], self.env[p + "REGION"]
            env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
        else:
            url, dest, mode = self.env[p + "URL"], self.env[p + "QUEUE"], "queue"
        (workdir / "producer.py").write_text(PRODUCER)
        out = subprocess.run([sys.executable, str(workdir / "producer.py"), self.kind, url, dest, mode, body],
                             capture_output=True, text=True, timeout=30, env=env)  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr


# Brokers `cello consume` has a client for: all four.
BUILT = ("redis", "rabbitmq", "kafka", "sqs")
CASES = [
    ("consumers", "mailer"),  # Redis list, PodMonitor
    ("consumers", "audit"),  # Redis stream + consumer group, PodMonitor
    ("consumers", "jobber"),  # RabbitMQ, PodMonitor
    ("consumers-annotations", "mailer"),  # scrape annotations
    ("consumers-annotations", "jobber"),
    ("keda-redis-streams", "audit"),  # replicas left to KEDA; the pod is the same
    ("consumers", "fulfil"),  # Kafka (the mock cluster), consumer group
    ("keda-consumers", "fulfil"),
    ("stopped", "fulfil"),  # zero replicas; the pod template is still a working one
    ("keda-sqs", "billing"),  # SQS with key Secrets and a local-stack endpoint
    ("keda-sqs", "refunds"),  # SQS without key Secrets: the pod's identity (IRSA)
]


@pytest.mark.parametrize(("stem", "name"), CASES, ids=[f"{s}-{n}" for s, n in CASES])
def test_consumer_pod_serves_its_probes_and_processes_a_message(stem, name, cello_bin, tmp_path, request):
    import redis as redis_py

    kind = ConsumerPod.kind_of(stem, name)
    addresses = {"redis:6379": f"{REDIS[0]}:{REDIS[1]}"}
    require(REDIS, "Redis")  # the handlers record what they processed there
    if kind == "rabbitmq":
        require(RABBITMQ, "RabbitMQ")
    identity: dict[str, str] = {}
    if kind == "kafka":
        servers, create_topic = request.getfixturevalue("kafka")
        addresses["kafka:9092"] = servers
    if kind == "sqs":
        endpoint, recording = request.getfixturevalue("moto")
        addresses["http://localstack:4566"] = endpoint
        addresses["https://sqs.us-east-1.amazonaws.com"] = endpoint
    pod = ConsumerPod(stem, name, tmp_path, addresses)
    if kind == "kafka":
        topic = pod.env[pod.prefix + "TOPIC"]
        for t in (topic, topic + ".dlq"):
            create_topic(t)
    if kind == "sqs":
        import boto3

        url, region = pod.env[pod.prefix + "QUEUE_URL"], pod.env[pod.prefix + "REGION"]
        boto3.client("sqs", endpoint_url=endpoint, region_name=region, aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_queue(QueueName=url.rsplit("/", 1)[1])  # fmt: skip
        if pod.prefix + "ACCESS_KEY_ID" not in pod.env:
            # What EKS's IRSA webhook injects for the service account's role; the cluster's
            # AWS endpoints (SQS, STS) are moto here.
            web_token = "eyJhbGciOiJSUzI1NiJ9.podtest-" + uuid.uuid4().hex
            (tmp_path / "token").write_text(web_token)
            identity = {"AWS_ROLE_ARN": ROLE_ARN, "AWS_WEB_IDENTITY_TOKEN_FILE": str(tmp_path / "token"),
                        "AWS_REGION": region, "AWS_DEFAULT_REGION": region, "AWS_STS_REGIONAL_ENDPOINTS": "regional",
                        "AWS_ENDPOINT_URL": endpoint}  # fmt: skip
            pod.env.update(identity)
        since = recorded(recording)
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "__init__.py").write_text("")
    (tmp_path / "shop" / "workers.py").write_text(WORKERS)
    (tmp_path / "shop" / "w.py").write_text(W)
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
        deadline = time.monotonic() + 30
        while r.get("podtest:done:" + token) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert r.get("podtest:done:" + token) == name, f"not processed\n{log.read_text()[-3000:]}"
        for port, path in pod.scrape_targets():
            code, text = get(port, path)
            assert code == 200, f"{stem}/{name}: scrape {path} -> {code}"
            received = [ln for ln in text.splitlines() if ln.startswith("cello_messaging_messages_received_total")]
            assert received and float(received[0].rsplit(" ", 1)[1]) >= 1, text
        if identity:
            calls = moto_requests(recording, since)
            sts = [urllib.parse.parse_qs(e["body"]) for e in calls if "Action=AssumeRoleWithWebIdentity" in e["body"]]
            assert sts and all(f["WebIdentityToken"] == [web_token] and f["RoleArn"] == [ROLE_ARN] for f in sts), sts
            sqs_keys = {e["headers"]["authorization"].split("Credential=", 1)[1].split("/", 1)[0] for e in calls
                        if "/sqs/aws4_request" in e["headers"].get("authorization", "")}  # fmt: skip
            sqs_keys.discard("testing")  # this test's own calls (the queue, the producer)
            assert sqs_keys and all(k.startswith("ASIA") for k in sqs_keys), sqs_keys
        os.killpg(proc.pid, 15)
        assert proc.wait(30) == 0, log.read_text()[-3000:]
    finally:
        stop(proc)
        r.delete("podtest:done:" + token)
        r.close()


def test_every_consumer_deployment_of_the_snapshots_is_covered_or_waits_for_its_broker():
    """A new consumer fixture must be added to CASES."""
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
