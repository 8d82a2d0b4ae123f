"""The pod the operator builds, run for real: `cello run` started with the Deployment's exact
command, arguments and environment and the ConfigMap's exact `cello.yaml` (from the committed
snapshots in operator/tests/snapshots/), then probed and scraped where the Deployment, the
scrape annotations and the ServiceMonitor/PodMonitor say.

Also the images: the app image's entrypoint, user, port and defaults (docker/app-base/Dockerfile)
against what the operator's Deployment passes, and `cello run` in a container-like environment
(uid 65532, read-only root, a tmpfs /tmp, HOME unset) — the restricted securityContext the
operator gives the pod.
"""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import pytest

yaml = pytest.importorskip("yaml") if os.environ.get("CI") != "true" else __import__("yaml")

ROOT = pathlib.Path(__file__).resolve().parents[2]
SNAPSHOTS = ROOT / "operator" / "tests" / "snapshots"
CELLO_BIN = pathlib.Path(sys.executable).parent / "cello"
NONROOT = 65532

APP_MODULE = """
from cello import App

app = App()


@app.get("/")
def index(request):
    return {"hello": "pod"}
"""


def need(reason: str):
    """Skip locally, fail in CI."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"required tool missing in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def cello_bin() -> pathlib.Path:
    try:
        import cello._cello  # noqa: F401  (the Rust extension must be built: `make build`)
    except ImportError:
        need("the cello extension is not built (make build)")
    if not CELLO_BIN.exists():
        need(f"no cello command next to {sys.executable}")
    return CELLO_BIN


class Yaml12Loader(yaml.SafeLoader):
    """YAML 1.2 booleans (serde_yaml writes `value: on` unquoted; YAML 1.1 would read True)."""


Yaml12Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", __import__("re").compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def docs(stem: str) -> list[dict]:
    return [d for d in yaml.load_all((SNAPSHOTS / f"{stem}.yaml").read_text(), Loader=Yaml12Loader) if d]


def find(objs: list[dict], kind: str, name: str) -> dict:
    return next(d for d in objs if d["kind"] == kind and d["metadata"]["name"] == name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_until_serving(proc: subprocess.Popen, port: int, log: pathlib.Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"cello run exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listening on {port} after {timeout} s:\n{log.read_text()[-3000:]}")


class Pod:
    """The app container of a snapshot's Deployment `shop`, run as a local process."""

    def __init__(self, stem: str, workdir: pathlib.Path):
        self.objs = docs(stem)
        self.deployment = find(self.objs, "Deployment", "shop")
        self.template = self.deployment["spec"]["template"]
        pod = self.template["spec"]
        self.container = pod["containers"][0]
        assert self.container["name"] == "app", "embedded mode"
        self.ports = {p["name"]: p["containerPort"] for p in self.container["ports"]}

        # The ConfigMap, mounted where the Deployment mounts it, as CELLO_CONFIG says.
        cm = find(self.objs, "ConfigMap", "shop-config")
        volume = next(v for v in pod["volumes"] if v.get("configMap", {}).get("name") == "shop-config")
        mount = next(m for m in self.container["volumeMounts"] if m["name"] == volume["name"])
        env = {e["name"]: e["value"] for e in self.container.get("env", []) if "value" in e}
        assert env["CELLO_CONFIG"] == f"{mount['mountPath']}/cello.yaml"
        config_dir = workdir / "config"
        config_dir.mkdir()
        (config_dir / "cello.yaml").write_text(cm["data"]["cello.yaml"])
        env["CELLO_CONFIG"] = str(config_dir / "cello.yaml")
        self.env = env

        # The app the image would carry: `shop.main:app` in the working directory.
        (workdir / "shop").mkdir()
        (workdir / "shop" / "__init__.py").write_text("")
        (workdir / "shop" / "main.py").write_text(APP_MODULE)
        self.workdir = workdir

        # The exact command line, with one substitution: a free port for the http port.
        argv = self.container["command"] + self.container["args"]
        i = argv.index("--port")
        assert int(argv[i + 1]) == self.ports["http"], "--port is the container port"
        assert argv[argv.index("--host") + 1] == "0.0.0.0", "reachable from the kubelet and the Service"
        self.port = free_port()
        argv[i + 1] = str(self.port)
        self.argv = argv

    def target(self, port_name_or_number) -> int:
        """The local port for a container port name or number (only `http` is served)."""
        number = self.ports.get(port_name_or_number, port_name_or_number)
        assert int(number) == self.ports["http"], f"{port_name_or_number} is not the served port"
        return self.port

    def scrape_targets(self) -> list[tuple[int, str]]:
        """Where Prometheus would scrape: annotations, or the monitor object — never both."""
        ann = self.template["metadata"].get("annotations", {})
        monitors = [d for d in self.objs if d["kind"] in ("ServiceMonitor", "PodMonitor")]
        out = []
        if ann.get("prometheus.io/scrape") == "true":
            assert not monitors
            out.append((self.target(int(ann["prometheus.io/port"])), ann["prometheus.io/path"]))
        for m in monitors:
            if m["kind"] == "ServiceMonitor":
                svc = find(self.objs, "Service", "shop")
                for ep in m["spec"]["endpoints"]:
                    sp = next(p for p in svc["spec"]["ports"] if p["name"] == ep["port"])
                    out.append((self.target(sp["targetPort"]), ep["path"]))
            else:
                for ep in m["spec"]["podMetricsEndpoints"]:
                    out.append((self.target(ep["port"]), ep["path"]))
        return out

    def probes(self) -> list[tuple[str, int, str]]:
        out = []
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = self.container.get(kind)
            if probe and "httpGet" in probe:
                out.append((kind, self.target(probe["httpGet"]["port"]), probe["httpGet"]["path"]))
        return out


def start(argv: list[str], env: dict, cwd: pathlib.Path, log: pathlib.Path) -> subprocess.Popen:
    return subprocess.Popen(
        argv, env=env, cwd=cwd, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def base_env(pod: Pod, cello_bin: pathlib.Path) -> dict:
    env = {"PATH": f"{cello_bin.parent}:/usr/bin:/bin", "LANG": "C.UTF-8", **pod.env}
    env.pop("HOME", None)
    return env


@pytest.mark.parametrize("stem", ["minimal", "metrics-podmonitor", "metrics-annotations", "full", "kube-1-28"])
def test_cello_run_serves_what_the_pod_is_probed_and_scraped_on(stem, cello_bin, tmp_path):
    pod = Pod(stem, tmp_path)
    scrapes = pod.scrape_targets()
    assert scrapes, f"{stem}: metrics are on, something must say where to scrape"
    log = tmp_path / "cello.log"
    argv = [str(cello_bin)] + pod.argv[1:]
    proc = start(argv, base_env(pod, cello_bin), tmp_path, log)
    try:
        wait_until_serving(proc, pod.port, log)
        for port, path in scrapes:
            code, body = get(port, path)
            assert code == 200, f"{stem}: scrape {path} -> {code}\n{body[:500]}"
            assert "# TYPE" in body, f"{stem}: {path} is not Prometheus text:\n{body[:500]}"
        for kind, port, path in pod.probes():
            if path.startswith("/health/"):  # custom probe paths are the app's own routes
                code, body = get(port, path)
                assert code == 200, f"{stem}: {kind} {path} -> {code}\n{body[:500]}"
        assert get(pod.port, "/")[0] == 200
    finally:
        stop(proc)


def test_metrics_off_serves_no_metrics_and_advertises_none(cello_bin, tmp_path):
    pod = Pod("metrics-off", tmp_path)
    assert pod.scrape_targets() == []
    log = tmp_path / "cello.log"
    proc = start([str(cello_bin)] + pod.argv[1:], base_env(pod, cello_bin), tmp_path, log)
    try:
        wait_until_serving(proc, pod.port, log)
        assert get(pod.port, "/metrics")[0] == 404
    finally:
        stop(proc)


# ---------------------------------------------------------------- images


def dockerfile_final_stage(path: pathlib.Path) -> dict:
    """FROM, USER, EXPOSE, ENTRYPOINT, CMD, ENV and WORKDIR of the last stage of a Dockerfile."""
    stage: dict = {}
    lines = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if lines and lines[-1].endswith("\\"):
            lines[-1] = lines[-1][:-1] + " " + line
        else:
            lines.append(line)
    for line in lines:
        op, _, rest = line.partition(" ")
        op = op.upper()
        if op == "FROM":
            stage = {"FROM": rest.split()[0], "ENV": {}}
        elif op in ("ENTRYPOINT", "CMD"):
            stage[op] = json.loads(rest)
        elif op == "ENV":
            for item in shlex.split(rest):
                k, _, v = item.partition("=")
                stage["ENV"][k] = v
        elif op in ("USER", "EXPOSE", "WORKDIR"):
            stage[op] = rest.strip()
    return stage


def test_app_image_matches_the_deployment_the_operator_writes():
    image = dockerfile_final_stage(ROOT / "docker" / "app-base" / "Dockerfile")
    objs = docs("minimal")
    deploy = find(objs, "Deployment", "shop")
    pod = deploy["spec"]["template"]["spec"]
    c = pod["containers"][0]
    argv = c["command"] + c["args"]
    # Same program and subcommand whether the image's entrypoint or the Deployment's command runs.
    assert argv[: len(image["ENTRYPOINT"])] == image["ENTRYPOINT"], (image["ENTRYPOINT"], argv)
    # runAsNonRoot can only be verified by the kubelet for a numeric user.
    uid, _, gid = image["USER"].partition(":")
    assert uid.isdigit() and int(uid) != 0 and (not gid or gid.isdigit()), image["USER"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    # The exposed port is the default spec.port and the container port.
    assert int(image["EXPOSE"]) == c["ports"][0]["containerPort"] == 8000
    # `docker run <image> app:app` must be reachable too: the image's own defaults listen on all
    # interfaces on that port (cello run binds 127.0.0.1 by default).
    assert image["ENV"].get("CELLO_HOST") == "0.0.0.0"
    assert image["ENV"].get("CELLO_PORT") == image["EXPOSE"]
    # Old clusters get an exec `sleep` preStop hook: the app image must carry a sleep binary,
    # so it is a Debian-based image, not distroless.
    assert "distroless" not in image["FROM"], image["FROM"]
    old = find(docs("kube-1-28"), "Deployment", "shop")["spec"]["template"]["spec"]["containers"][0]
    assert old["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"


def test_dataplane_and_operator_images_match_their_deployments():
    dp = dockerfile_final_stage(ROOT / "server" / "Dockerfile")
    side = find(docs("sidecar"), "Deployment", "shop")["spec"]["template"]["spec"]["containers"][0]
    assert side["name"] == "cello-dataplane"
    assert pathlib.PurePath(dp["ENTRYPOINT"][0]).name == side["command"][0]
    assert dp["USER"].split(":")[0].isdigit() and dp["USER"] != "0"
    # The data plane image has no `sleep`: on old clusters it drains by itself (no exec hook).
    old = find(docs("sidecar-kube-1-29"), "Deployment", "shop")["spec"]["template"]["spec"]["containers"][0]
    assert "lifecycle" not in old

    op = dockerfile_final_stage(ROOT / "operator" / "Dockerfile")
    chart_values = yaml.safe_load((ROOT / "charts" / "cello-operator" / "values.yaml").read_text())
    assert op["USER"].split(":")[0].isdigit() and op["USER"] != "0"
    assert int(op["EXPOSE"]) == chart_values["port"]


def container_like(argv: list[str], env: dict, appdir: pathlib.Path) -> list[str]:
    """`argv` as the pod runs it: in a private mount namespace with the root file system
    read-only, a fresh tmpfs on /tmp (the pod's emptyDir), as uid/gid 65532 without HOME."""
    script = r"""
set -e
mount --make-rprivate /
mount --bind "$APPDIR" "$APPDIR"
# A checkout under /tmp (a CI clone) would vanish under the tmpfs: carry it across.
if [ -n "$REPO" ] && [ "${REPO#/tmp/}" != "$REPO" ]; then
  mkdir -p "$APPDIR/.repo" && mount --bind "$REPO" "$APPDIR/.repo"
fi
mount -t tmpfs -o mode=1777,size=64m tmpfs /tmp
if mountpoint -q "$APPDIR/.repo" 2>/dev/null; then
  mkdir -p "$REPO" && mount --move "$APPDIR/.repo" "$REPO"
fi
# The interpreter may live under /root (mode 700): expose just it, read-only, to uid 65532.
if [ -n "$PYHOME" ] && [ "${PYHOME#/root/}" != "$PYHOME" ]; then
  mkdir /tmp/.py && mount --bind "$PYHOME" /tmp/.py
  mount -t tmpfs -o mode=755,size=1m tmpfs /root
  mkdir -p "$PYHOME" && mount --move /tmp/.py "$PYHOME" && rmdir /tmp/.py
  mount -o bind,remount,ro /root
fi
mount -o bind,remount,ro "$APPDIR"
mount -o bind,remount,ro /
exec setpriv --reuid=65532 --regid=65532 --clear-groups --no-new-privs "$@"
"""
    return ["unshare", "--mount", "sh", "-c", script, "sh", *argv]


def test_cello_run_starts_in_a_container_like_environment(cello_bin):
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("setpriv"):
        need("needs root with unshare and setpriv to build a container-like mount namespace")
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    if probe.returncode != 0:
        need(f"unshare --mount is not permitted here: {probe.stderr.decode().strip()}")
    # Outside /tmp (a tmpfs is mounted over it) and readable by uid 65532.
    appdir = pathlib.Path(tempfile.mkdtemp(prefix="cello-pod-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    try:
        appdir.chmod(0o755)
        pod = Pod("minimal", appdir)
        for p in appdir.rglob("*"):
            p.chmod(0o755 if p.is_dir() else 0o644)
        env = base_env(pod, cello_bin)
        env["APPDIR"] = str(appdir)
        env["PYHOME"] = os.path.realpath(sys.base_prefix)
        env["REPO"] = str(pathlib.Path(__file__).resolve().parents[2])
        # The interpreter's real location, since the venv's python may be a symlink into PYHOME.
        argv = container_like([sys.executable, str(cello_bin)] + pod.argv[1:], env, appdir)
        # A check that runs first in the same environment: uid, HOME, read-only root.
        probe_code = (
            "import os, tempfile\n"
            "print(os.getuid(), os.environ.get('HOME'))\n"
            "tempfile.NamedTemporaryFile(dir='/tmp').close()\n"
            f"for path in ('/cello-probe', {str(appdir / 'probe')!r}):\n"
            "    try:\n"
            "        open(path, 'w')\n"
            "    except OSError as e:\n"
            "        print(e.errno)\n"
            "    else:\n"
            "        print('writable', path)\n"
        )
        check = container_like([sys.executable, "-c", probe_code], env, appdir)
        out = subprocess.run(check, env=env, cwd=appdir, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == [str(NONROOT), "None", "30", "30"], out.stdout  # 30 = EROFS
        log = pathlib.Path(tempfile.mkdtemp()) / "cello.log"
        proc = start(argv, env, appdir, log)
        try:
            wait_until_serving(proc, pod.port, log)
            assert get(pod.port, "/")[0] == 200
            assert get(pod.port, "/health/ready")[0] == 200
            assert get(pod.port, "/metrics")[0] == 200
        finally:
            stop(proc)
        # It ran as the non-root user, and stopped cleanly on SIGTERM.
        assert proc.returncode == 0, log.read_text()[-3000:]
    finally:
        shutil.rmtree(appdir, ignore_errors=True)


def test_tls_pod_serves_https_where_the_probes_say(cello_bin, tmp_path):
    """`tls.termination: pod`: the operator mounts the Secret and sets `CELLO_TLS_*`; `cello run`
    started with exactly that env serves HTTPS, and every probe (scheme HTTPS) passes."""
    import ssl

    trustme = pytest.importorskip("trustme") if os.environ.get("CI") != "true" else __import__("trustme")
    pod = Pod("tls-secret-pod", tmp_path)
    spec = pod.template["spec"]
    volume = next(v for v in spec["volumes"] if "secret" in v)
    mount = next(m for m in pod.container["volumeMounts"] if m["name"] == volume["name"])
    # The Secret (type kubernetes.io/tls: keys tls.crt and tls.key), where the Deployment mounts it.
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(secret_dir / "tls.crt"))
    cert.private_key_pem.write_to_path(str(secret_dir / "tls.key"))
    env = base_env(pod, cello_bin)
    tls_vars = {k: v for k, v in env.items() if k.startswith("CELLO_TLS_")}
    assert set(tls_vars) == {"CELLO_TLS_CERT_FILE", "CELLO_TLS_KEY_FILE"}, tls_vars
    for k, v in tls_vars.items():
        assert v.startswith(mount["mountPath"] + "/"), f"{k}={v} is outside the Secret mount"
        env[k] = str(secret_dir / v[len(mount["mountPath"]) + 1 :])
    probes = [pod.container[k] for k in ("startupProbe", "livenessProbe", "readinessProbe") if k in pod.container]
    assert probes and all(p["httpGet"].get("scheme") == "HTTPS" for p in probes)

    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    log = tmp_path / "cello.log"
    proc = start([str(cello_bin)] + pod.argv[1:], env, tmp_path, log)
    try:
        wait_until_serving(proc, pod.port, log)
        for kind, port, path in pod.probes():
            deadline = time.monotonic() + 10
            while True:
                try:
                    with urllib.request.urlopen(f"https://127.0.0.1:{port}{path}", timeout=5, context=ctx) as r:
                        code = r.status
                except urllib.error.HTTPError as e:
                    code = e.code
                if code == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert code == 200, f"{kind} https {path} -> {code}\n{log.read_text()[-2000:]}"
        # Plain HTTP, as a probe without `scheme: HTTPS` would send, is refused.
        code, _ = get(pod.port, "/health/live")
        assert code == 400
    finally:
        stop(proc)
