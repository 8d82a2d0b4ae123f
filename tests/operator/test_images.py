"""The app image, built and run by a real OCI runtime (podman + runc) the way the operator's
Deployment runs it: the Deployment's command, arguments and environment, the ConfigMap mounted
read-only at /etc/cello, a read-only root file system, a tmpfs /tmp, the image's non-root user
and no HOME.

No registry is reachable here, so the image is built from a local Debian base
(`tests/operator/build_base_image.sh`: debootstrap + `podman import`) and its runtime stage is
assembled from what the build would produce: this Python and the built `cello` package (the real
Dockerfile's build stage needs python/rust images from Docker Hub and rustup from
sh.rustup.rs). USER, WORKDIR, ENV, EXPOSE and ENTRYPOINT are copied from the final stage of
docker/app-base/Dockerfile, so the image carries exactly the real one's runtime contract.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import time

import pytest
from test_pod_contract import ROOT, Pod, dockerfile_final_stage, free_port, get, need

BASE = "localhost/debian:bookworm-min"
IMAGE = "localhost/cello-app-test:latest"


@pytest.fixture(scope="module")
def podman() -> list[str]:
    exe = shutil.which("podman")
    if not exe:
        need("podman is not installed (apt-get install podman runc debootstrap)")
    if subprocess.run([exe, "image", "exists", BASE]).returncode != 0:
        need(f"no {BASE} image: run tests/operator/build_base_image.sh")
    # crun cannot run on hybrid cgroup hosts; the sandbox's hard limits are below podman's
    # default ulimits.
    cmd = [exe]
    if shutil.which("runc"):
        cmd += ["--runtime", "runc"]
    return cmd


LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


@pytest.fixture(scope="module")
def image(podman, tmp_path_factory) -> dict:
    try:
        import cello._cello  # noqa: F401
    except ImportError:
        need("the cello extension is not built (make build)")
    import cello

    final = dockerfile_final_stage(ROOT / "docker" / "app-base" / "Dockerfile")
    ctx = tmp_path_factory.mktemp("image")
    prefix = pathlib.Path(sys.base_prefix).resolve()
    shutil.copytree(prefix, ctx / "python", symlinks=True, ignore=shutil.ignore_patterns("test", "__pycache__"))
    shutil.copytree(pathlib.Path(cello.__file__).parent, ctx / "cello", ignore=shutil.ignore_patterns("__pycache__"))
    # The wheel's one runtime dependency (pip installs it beside the package).
    import graphql

    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(pathlib.Path(graphql.__file__).parent, ctx / "graphql", ignore=skip)
    (ctx / "app" / "shop").mkdir(parents=True)
    (ctx / "app" / "shop" / "__init__.py").write_text("")
    (ctx / "app" / "shop" / "main.py").write_text(
        'from cello import App\n\napp = App()\n\n\n@app.get("/")\ndef index(request):\n    return {"hello": "image"}\n'
    )
    python = f"{prefix}/bin/python{sysconfig.get_python_version()}"
    env = " ".join(f"{k}={v}" for k, v in final["ENV"].items())
    (ctx / "Containerfile").write_text(
        f"""FROM {BASE}
COPY python {prefix}
COPY cello /opt/site/cello
COPY graphql /opt/site/graphql
COPY app {final["WORKDIR"]}
# What `pip install` of the wheel gives: a `cello` console script. The interpreter's prefix may
# sit under a mode-700 directory (/root): open the path for the non-root user.
RUN d={prefix}; while [ "$d" != / ]; do chmod o+x "$d"; d=$(dirname "$d"); done \\
 && printf '#!{python}\\nimport sys\\nfrom cello.cli import main\\nsys.exit(main())\\n' > /usr/local/bin/cello \\
 && chmod 755 /usr/local/bin/cello && useradd --uid {final["USER"].split(":")[0]} --create-home app
ENV PYTHONPATH=/opt/site
# From docker/app-base/Dockerfile's final stage:
WORKDIR {final["WORKDIR"]}
USER {final["USER"]}
ENV {env}
EXPOSE {final["EXPOSE"]}
ENTRYPOINT {final["ENTRYPOINT"]!r}
""".replace("'", '"')
    )
    out = subprocess.run(
        [*podman, "build", *LIMITS, "-t", IMAGE, str(ctx)], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return final


def test_the_app_image_runs_the_operators_pod_in_a_real_container(podman, image, tmp_path):
    pod = Pod("minimal", tmp_path)
    config_dir = tmp_path / "config"
    config_dir.chmod(0o755)
    (config_dir / "cello.yaml").chmod(0o644)
    env = dict(pod.env, CELLO_CONFIG="/etc/cello/cello.yaml")
    name = f"cello-image-test-{os.getpid()}"
    port = free_port()
    argv = list(pod.argv)
    argv[argv.index("--port") + 1] = str(port)
    run = [
        *podman,
        "run",
        "-d",
        "--rm",
        "--name",
        name,
        *LIMITS,
        "--network",
        "host",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "-v",
        f"{config_dir}:/etc/cello:ro",
        *[f"--env={k}={v}" for k, v in env.items()],
        # The Deployment's `command` replaces the entrypoint; its `args` follow.
        "--entrypoint",
        argv[0],
        IMAGE,
        *argv[1:],
    ]
    out = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if get(port, "/health/ready")[0] == 200:
                    break
            except OSError:
                pass
            alive = subprocess.run([*podman, "container", "exists", name]).returncode == 0
            assert alive and time.monotonic() < deadline, subprocess.run(
                [*podman, "logs", name], capture_output=True, text=True
            ).stderr[-3000:]
            time.sleep(0.3)
        assert get(port, "/")[0] == 200
        code, body = get(port, "/metrics")
        assert code == 200 and "# TYPE" in body
        ident = subprocess.run(
            # The serving process (pid 1): its uid and environment; and the root file system.
            [
                *podman,
                "exec",
                name,
                "sh",
                "-c",
                "awk '/^Uid/{print $2}' /proc/1/status;"
                " if tr '\\0' '\\n' < /proc/1/environ | grep -q '^HOME='; then echo home; else echo unset; fi;"
                " touch /x 2>/dev/null || echo ro",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        # HOME: podman (like the kubelet) sets it from /etc/passwd whatever --unsetenv says; the
        # HOME-unset case is test_pod_contract.py::test_cello_run_starts_in_a_container_like_environment.
        uid, _home, root = ident.stdout.split()
        assert (uid, root) == (image["USER"].split(":")[0], "ro"), ident
    finally:
        subprocess.run([*podman, "stop", "-t", "10", name], capture_output=True, timeout=60)
