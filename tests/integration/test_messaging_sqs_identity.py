"""Issue 15, item 6: SQS credentials from the pod's identity, black-box. With no static keys, a
``cello consume`` process, a producer process and an app under ``cello run`` take their
credentials from IRSA (a web identity token file and ``AWS_ROLE_ARN``, exchanged at STS
``AssumeRoleWithWebIdentity``) or from EKS Pod Identity (a container credentials endpoint that
checks an authorization token). A real moto server (SQS and STS) records every request it gets
(``MOTO_ENABLE_RECORDING``), so the tests see which key signed each SQS call and what was sent
to STS. No source at all is a start-up error naming the options."""

from __future__ import annotations

import base64
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apps"))
from cli_harness import cello_procs, free_port
from db_helpers import missing

__all__ = ["cello_procs"]
pytestmark = pytest.mark.timeout(90)
REGION = "us-east-1"
ROLE_ARN = "arn:aws:iam::123456789012:role/cello-consumer"
# Every variable an AWS credential source or endpoint reads: none leaks in from the outside.
AMBIENT = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "AWS_PROFILE", "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL_SQS",
)  # fmt: skip

APP = textwrap.dedent(
    """
    import os
    from cello.messaging import sqs_consumer

    @sqs_consumer(os.environ["Q"], endpoint_url=os.environ["ENDPOINT"], visibility_timeout_secs=5)
    async def handle(message):
        with open(os.environ["OUT"], "a") as f:
            f.write(message.text + "\\n")
    """
)

PRODUCER = textwrap.dedent(
    """
    import asyncio, sys
    from cello.config import SqsConfig
    from cello.messaging import Producer

    async def main():
        endpoint, queue, *bodies = sys.argv[1:]
        p = await Producer.connect(SqsConfig(endpoint_url=endpoint))
        for body in bodies:
            assert await p.send(queue, body)
        print("sent", len(bodies))
        await p.close()

    asyncio.run(main())
    """
)

# Consumer and producer inside `cello run`, beside HTTP.
WEB_APP = textwrap.dedent(
    """
    import os
    from cello import App
    from cello.config import SqsConfig
    from cello.messaging import Producer, sqs_consumer

    config = SqsConfig(endpoint_url=os.environ["ENDPOINT"], wait_time_secs=1)
    app = App()
    app.enable_messaging(config, startup_timeout=10)
    producer = None

    @sqs_consumer(os.environ["Q"], visibility_timeout_secs=5)
    async def handle(message):
        with open(os.environ["OUT"], "a") as f:
            f.write(message.text + "\\n")

    @app.post("/send/{text}")
    async def send(request, text: str):
        global producer
        if producer is None:
            producer = await Producer.connect(config)
        return {"id": await producer.send(os.environ["Q"], text)}
    """
)


@pytest.fixture(autouse=True)
def no_ambient_credentials(monkeypatch):
    for name in AMBIENT:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    """``(endpoint, recording file)`` of a moto server that records every request."""
    exe = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    if not os.path.exists(exe):
        missing("moto_server (moto[server] of requirements-dev.txt) is not installed")
    port = free_port()
    tmp = tmp_path_factory.mktemp("moto")
    recording = tmp / "requests.jsonl"
    env = {**os.environ, "MOTO_ENABLE_RECORDING": "True", "MOTO_RECORDER_FILEPATH": str(recording)}
    with open(tmp / "moto.log", "wb") as log:
        proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT,
                                env=env)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url + "/moto-api/", timeout=1)
            break
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"moto_server did not start on {url}: {(tmp / 'moto.log').read_text()[-2000:]}")
            time.sleep(0.1)
    yield url, recording
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(10)


@pytest.fixture
def queue(moto):
    import boto3

    sqs = boto3.client("sqs", endpoint_url=moto[0], region_name=REGION, aws_access_key_id="testing",
                       aws_secret_access_key="testing")  # fmt: skip
    return sqs.create_queue(QueueName=f"idtest-{uuid.uuid4().hex[:10]}")["QueueUrl"]


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "sapp.py").write_text(APP)
    (tmp_path / "producer.py").write_text(PRODUCER)
    (tmp_path / "webapp.py").write_text(WEB_APP)
    return tmp_path


def requests_to(recording: Path, since: int = 0) -> list[dict]:
    """The requests moto recorded (from line ``since``), bodies decoded."""
    out = []
    for line in recording.read_text().splitlines()[since:]:
        entry = json.loads(line)
        body = entry.get("body") or ""
        if entry.get("body_encoded"):
            body = base64.b64decode(body).decode("utf-8", "replace")
        entry["body"] = body
        entry["headers"] = {k.lower(): v for k, v in entry["headers"].items()}
        out.append(entry)
    return out


def signed_by(entry: dict) -> str | None:
    """The access key id of a SigV4-signed request."""
    auth = entry["headers"].get("authorization", "")
    if "Credential=" not in auth:
        return None
    return auth.split("Credential=", 1)[1].split("/", 1)[0]


def sqs_calls(entries: list[dict]) -> list[dict]:
    """SQS requests not made by this test's boto3 (which signs with ``testing``)."""
    return [e for e in entries if "/sqs/aws4_request" in e["headers"].get("authorization", "")
            and signed_by(e) != "testing"]  # fmt: skip


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def wait_for(check, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"{what} not reached within {timeout} s")


def produce(cello_procs, app_dir, endpoint, queue, bodies, env):
    proc = cello_procs.start([endpoint, queue, *bodies], script=app_dir / "producer.py", cwd=app_dir, env=env)
    assert proc.wait(30) == 0, proc.log()
    assert f"sent {len(bodies)}" in proc.log(), proc.log()


def consume(cello_procs, app_dir, endpoint, queue, env):
    port = free_port()
    e = {"Q": queue, "OUT": str(app_dir / "out.txt"), "ENDPOINT": endpoint, **env}
    proc = cello_procs.start(["consume", "sapp:handle", "--admin-port", str(port)], cwd=app_dir, env=e, port=port)
    resp = proc.wait_http("/health/ready", timeout=30)
    assert resp.status_code == 200, resp.text
    return proc


def irsa(tmp_path: Path, endpoint: str) -> tuple[str, dict]:
    """A projected service-account token and the variables EKS's webhook sets for IRSA (STS at
    moto instead of sts.amazonaws.com)."""
    token = "eyJhbGciOiJSUzI1NiJ9.irsa-" + uuid.uuid4().hex
    (tmp_path / "token").write_text(token)
    return token, {
        "AWS_ROLE_ARN": ROLE_ARN,
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(tmp_path / "token"),
        "AWS_ROLE_SESSION_NAME": "cello-test",
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL_STS": endpoint,
    }


def assert_irsa_signed(entries: list[dict], token: str) -> set[str]:
    """STS got the token for the role; every SQS call was signed with a session key from STS."""
    sts = [e for e in entries if "Action=AssumeRoleWithWebIdentity" in e["body"]]
    assert sts, "no AssumeRoleWithWebIdentity call reached STS"
    for e in sts:
        form = urllib.parse.parse_qs(e["body"])
        assert form["WebIdentityToken"] == [token] and form["RoleArn"] == [ROLE_ARN], form
        assert form["RoleSessionName"] == ["cello-test"], form
        assert "authorization" not in e["headers"], "AssumeRoleWithWebIdentity is not signed"
    calls = sqs_calls(entries)
    assert calls, "no SQS call"
    keys = {signed_by(e) for e in calls}
    # moto's STS hands out temporary keys (ASIA...) with a session token.
    assert all(k.startswith("ASIA") for k in keys), keys
    assert all(e["headers"].get("x-amz-security-token") for e in calls)
    return keys


def test_irsa_web_identity_consume_and_produce_without_static_keys(cello_procs, app_dir, moto, queue):
    endpoint, recording = moto
    since = len(lines(recording))
    token, env = irsa(app_dir, endpoint)
    produce(cello_procs, app_dir, endpoint, queue, ["a", "b", "c"], env)
    proc = consume(cello_procs, app_dir, endpoint, queue, env)
    wait_for(lambda: sorted(lines(app_dir / "out.txt")) == ["a", "b", "c"], what="the messages handled")
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(20) == 0, proc.log()
    calls = requests_to(recording, since)
    assert_irsa_signed(calls, token)
    targets = {e["headers"].get("x-amz-target") for e in sqs_calls(calls)}
    assert {"AmazonSQS.SendMessage", "AmazonSQS.ReceiveMessage", "AmazonSQS.DeleteMessageBatch"} <= targets, targets


def test_irsa_in_app_consumer_and_producer_under_cello_run(cello_procs, app_dir, moto, queue):
    endpoint, recording = moto
    since = len(lines(recording))
    token, env = irsa(app_dir, endpoint)
    port = free_port()
    e = {"Q": queue, "OUT": str(app_dir / "out.txt"), "ENDPOINT": endpoint, **env}
    proc = cello_procs.start(["run", "webapp:app", "--port", str(port)], cwd=app_dir, env=e, port=port)
    proc.wait_http("/health/live", timeout=30)
    resp = httpx.post(f"http://127.0.0.1:{port}/send/hello", timeout=30)
    assert resp.status_code == 200 and resp.json()["id"], resp.text
    wait_for(lambda: lines(app_dir / "out.txt") == ["hello"], what="the message handled in the app")
    assert_irsa_signed(requests_to(recording, since), token)


class ContainerCredentials:
    """EKS Pod Identity's agent in miniature: container credentials (JSON) for requests that
    carry the authorization token, each with a new key that expires ``lifetime`` s later."""

    def __init__(self, token: str, lifetime: float):
        self.token, self.lifetime = token, lifetime
        self.served: list[str] = []
        self.refused = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the stdlib's name
                if self.path != "/v1/credentials" or self.headers.get("Authorization") != outer.token:
                    outer.refused += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                key = f"ASIAPODIDENTITY{len(outer.served) + 1:05d}"
                outer.served.append(key)
                expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=outer.lifetime)
                body = json.dumps({"AccessKeyId": key, "SecretAccessKey": "secret-" + key, "Token": "session-" + key,
                                   "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}).encode()  # fmt: skip
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1/credentials"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_pod_identity_container_credentials_are_used_and_refreshed(cello_procs, app_dir, moto, queue):
    endpoint, recording = moto
    since = len(lines(recording))
    token = "pod-identity-" + uuid.uuid4().hex
    (app_dir / "agent-token").write_text(token)
    # 16 s: the SDK's cache renews 10 to 15 s before expiry, so within seconds here.
    agent = ContainerCredentials(token, lifetime=16)
    env = {
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": agent.url,
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(app_dir / "agent-token"),
        "AWS_REGION": REGION,
    }
    try:
        produce(cello_procs, app_dir, endpoint, queue, ["p1"], env)
        produced = set(agent.served)
        assert produced, "the producer fetched no credentials"
        proc = consume(cello_procs, app_dir, endpoint, queue, env)
        wait_for(lambda: lines(app_dir / "out.txt") == ["p1"], what="the message handled")
        first = len(agent.served)
        # The consumer keeps polling; its credentials are renewed before they expire and the
        # renewed key signs its calls.
        wait_for(lambda: len(agent.served) > first, timeout=20, what="the credentials renewed")
        newest = agent.served[-1]
        wait_for(lambda: newest in {signed_by(e) for e in sqs_calls(requests_to(recording, since))}, timeout=10,
                 what=f"an SQS call signed with the renewed key {newest}")  # fmt: skip
        calls = sqs_calls(requests_to(recording, since))
        assert {signed_by(e) for e in calls} <= set(agent.served)
        assert all(e["headers"].get("x-amz-security-token") == "session-" + signed_by(e) for e in calls)
        assert agent.refused == 0
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(20) == 0, proc.log()
    finally:
        agent.close()


def test_a_wrong_pod_identity_token_fails_the_start_naming_the_source(cello_procs, app_dir, moto, queue):
    agent = ContainerCredentials("the-right-token", lifetime=3600)
    try:
        env = {"AWS_CONTAINER_CREDENTIALS_FULL_URI": agent.url, "AWS_CONTAINER_AUTHORIZATION_TOKEN": "a-wrong-one",
               "AWS_REGION": REGION}  # fmt: skip
        proc = cello_procs.start([moto[0], queue, "x"], script=app_dir / "producer.py", cwd=app_dir, env=env)
        assert proc.wait(30) != 0
        assert agent.refused >= 1 and not agent.served
        # A refusal is not retried: a ValueError with the endpoint's answer, at once.
        assert "ValueError" in proc.log() and "credentials" in proc.log(), proc.log()
    finally:
        agent.close()


def test_an_unreachable_credentials_endpoint_is_retried_then_exit_3(cello_procs, app_dir, moto, queue):
    env = {"Q": queue, "OUT": str(app_dir / "out.txt"), "ENDPOINT": moto[0], "AWS_REGION": REGION,
           "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"http://127.0.0.1:{free_port()}/v1/credentials",
           "AWS_CONTAINER_AUTHORIZATION_TOKEN": "t"}  # fmt: skip
    args = ["consume", "sapp:handle", "--admin-port", str(free_port()), "--startup-timeout", "2"]
    code, log = cello_procs.run(args, cwd=app_dir, env=env, timeout=30)
    assert code == 3, log
    assert "BrokerUnavailable" in log and "SQS credentials" in log, log


def test_no_credential_source_is_a_clear_startup_error(cello_procs, app_dir, moto, queue):
    endpoint = moto[0]
    env = {"AWS_REGION": REGION}
    code, log = cello_procs.run(["consume", "sapp:handle", "--admin-port", str(free_port()), "--startup-timeout", "3"],
                                cwd=app_dir, env={"Q": queue, "OUT": str(app_dir / "out.txt"), "ENDPOINT": endpoint,
                                                  **env}, timeout=30)  # fmt: skip
    assert code != 0, log
    for option in ("ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
                   "AWS_CONTAINER_CREDENTIALS_FULL_URI"):  # fmt: skip
        assert option in log, (option, log)
    proc = cello_procs.start([endpoint, queue, "x"], script=app_dir / "producer.py", cwd=app_dir, env=env)
    assert proc.wait(30) != 0
    assert "AWS_WEB_IDENTITY_TOKEN_FILE" in proc.log() and "ValueError" in proc.log(), proc.log()
