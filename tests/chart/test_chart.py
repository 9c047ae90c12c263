"""The Helm chart, checked with Helm's own engine (helm-python-sdk bundles Helm v4):
strict lint, rendering in cluster and namespaced mode, the values schema, the CRDs,
least-privilege RBAC (golden file plus structural rules), the Kubernetes schemas of
every rendered object, and the restricted pod security of the operator's pod.

UPDATE_GENERATED=1 rewrites the RBAC golden files after an intended change; review
the diff.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import re
import subprocess
import tempfile
from typing import Any

import pytest
import yaml

import render
from render import CHART_DIR, REPO, mode_values, render_objects

GOLDEN = pathlib.Path(__file__).resolve().parent / "golden"
KUBERNETES_VERSION = "1.35.0"  # as tests/kubernetes_schemas.rs: k8s-openapi's feature
RELEASE_NAMESPACE = "referral-system"
WATCHED = ["team-a", "team-b"]
SERVICE_ACCOUNT = "referral-operator"

# Kinds the operator applies and prunes; PersistentVolumeClaim is applied only.
WRITE_VERBS = {"get", "list", "watch", "create", "patch", "delete"}
CLAIM_VERBS = {"get", "create", "patch"}


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def cluster(**extra: Any) -> list[dict[str, Any]]:
    return render_objects(render.merge(mode_values("cluster", []), extra), namespace=RELEASE_NAMESPACE)


def namespaced(**extra: Any) -> list[dict[str, Any]]:
    return render_objects(render.merge(mode_values("namespaced", WATCHED), extra), namespace=RELEASE_NAMESPACE)


def operator_roles(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Roles and ClusterRoles bound to the operator's ServiceAccount."""
    bound = set()
    for binding in by_kind(objects, "RoleBinding") + by_kind(objects, "ClusterRoleBinding"):
        subjects = binding.get("subjects") or []
        if any(s["kind"] == "ServiceAccount" and s["name"] == SERVICE_ACCOUNT for s in subjects):
            ref = binding["roleRef"]
            bound.add((ref["kind"], ref["name"], binding["metadata"].get("namespace")))
    roles = []
    for role in by_kind(objects, "Role") + by_kind(objects, "ClusterRole"):
        key = (role["kind"], role["metadata"]["name"], role["metadata"].get("namespace"))
        if key in bound:
            roles.append(role)
    return roles


def grants(rules: list[dict[str, Any]], group: str, resource: str, verb: str, name: str | None = None) -> bool:
    for rule in rules:
        if group not in rule.get("apiGroups", []) or resource not in rule.get("resources", []):
            continue
        if verb not in rule["verbs"]:
            continue
        names = rule.get("resourceNames")
        if names and (name is None or name not in names):
            continue
        return True
    return False


# ----------------------------------------------------------------- lint ---

LINT_CASES = {
    "defaults": {},
    "namespaced": mode_values("namespaced", WATCHED),
    "everything-on": {
        "leaderElection": {"enabled": True},
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
        "networkPolicy": {
            "enabled": True,
            "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}], "ports": [{"port": 443}]}],
        },
        "image": {"digest": "sha256:" + "a" * 64},
    },
}


@pytest.mark.parametrize("case", sorted(LINT_CASES))
def test_strict_lint_passes(helm, case):
    report = helm.lint(str(CHART_DIR), LINT_CASES[case], strict=True)
    assert report["total_charts_linted"] == 1
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


def test_strict_lint_reports_values_the_schema_refuses(helm):
    report = helm.lint(str(CHART_DIR), {"replicaCount": 2}, strict=True)
    assert any("/leaderElection/enabled" in error for error in report["errors"]), report


# --------------------------------------------------------------- schema ---

# (values, the field the error must name)
BAD_VALUES = {
    "two replicas without leader election": ({"replicaCount": 2}, "/leaderElection/enabled"),
    "namespaced mode without namespaces": ({"watch": {"mode": "namespaced"}}, "/watch/namespaces"),
    "unknown watch mode": ({"watch": {"mode": "everywhere"}}, "/watch/mode"),
    "namespace that is not a DNS label": (
        {"watch": {"mode": "namespaced", "namespaces": ["Team_A"]}},
        "/watch/namespaces/0",
    ),
    "digest that is not sha256": ({"image": {"digest": "latest"}}, "/image/digest"),
    "privileged metrics port": ({"metrics": {"port": 80}}, "/metrics/port"),
    "misspelt top-level key": ({"replicas": 2}, "replicas"),
    "misspelt nested key": ({"leaderElection": {"enable": True}}, "enable"),
    "log format": ({"logFormat": "xml"}, "/logFormat"),
    "memory limit that is not a quantity": ({"resources": {"limits": {"memory": "lots"}}}, "/resources/limits/memory"),
    "zero replicas": ({"replicaCount": 0}, "/replicaCount"),
    "pull policy": ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_schema_rejects_bad_values_naming_the_field(helm, case):
    values, field = BAD_VALUES[case]
    with render.load_chart() as chart:
        with pytest.raises(helm.HelmValuesError) as refused:
            chart.validate_schema(chart.merge_values(values))
    assert field in str(refused.value), str(refused.value)
    # An install renders through the same check: nothing is produced.
    with pytest.raises(render.RenderError) as refused:
        render.render_manifests(values)
    assert field in str(refused.value), str(refused.value)


def test_schema_accepts_the_defaults_and_each_documented_mode(helm):
    with render.load_chart() as chart:
        for values in [{}, *LINT_CASES.values(), {"replicaCount": 3, "leaderElection": {"enabled": True}}]:
            chart.validate_schema(chart.merge_values(values))


# ----------------------------------------------------------------- crds ---

def test_chart_crds_equal_the_generated_crds(helm):
    top = sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    chart = sorted(p.name for p in (CHART_DIR / "crds").glob("*.yaml"))
    assert chart == top, "charts/referral-operator/crds must hold exactly the files of crds/"
    for name in top:
        assert (CHART_DIR / "crds" / name).read_bytes() == (REPO / "crds" / name).read_bytes(), (
            f"charts/referral-operator/crds/{name} differs from crds/{name}: cp crds/*.yaml charts/referral-operator/crds/"
        )
    with render.load_chart() as loaded:
        kinds = [doc["kind"] for crd in loaded.crds for doc in yaml.safe_load_all(crd["data"]) if doc]
    assert kinds and set(kinds) == {"CustomResourceDefinition"}


# ---------------------------------------------------------------- modes ---

def test_cluster_mode_binds_one_cluster_role_and_watches_everything(helm):
    objects = cluster()
    roles = operator_roles(objects)
    assert [r["kind"] for r in roles] == ["ClusterRole"], roles
    binding = one(objects, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": RELEASE_NAMESPACE}
    ]
    args = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not [a for a in args if a.startswith("--namespace")], args


def test_namespaced_mode_has_a_role_per_namespace_and_nothing_cluster_wide(helm):
    objects = namespaced()
    roles = operator_roles(objects)
    assert sorted((r["kind"], r["metadata"]["namespace"]) for r in roles) == [("Role", ns) for ns in WATCHED]
    assert not by_kind(objects, "ClusterRoleBinding"), "namespaced mode must bind nothing cluster-wide"
    # The aggregated view/edit ClusterRoles are for people and bound to nobody here.
    for role in by_kind(objects, "ClusterRole"):
        assert role not in operator_roles(objects)
    args = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--namespace")] == [f"--namespace={ns}" for ns in WATCHED]


def test_replicas_default_to_one_and_to_two_with_leader_election(helm):
    single = one(cluster(), "Deployment")["spec"]
    assert single["replicas"] == 1
    assert single["strategy"] == {"type": "Recreate"}, "one writer at a time without election"
    args = single["template"]["spec"]["containers"][0]["args"]
    assert "--leader-elect" not in args
    assert not by_kind(cluster(), "Role"), "no Lease rights without leader election"

    objects = cluster(leaderElection={"enabled": True, "leaseName": "refop-leader"})
    elected = one(objects, "Deployment")["spec"]
    assert elected["replicas"] == 2
    args = elected["template"]["spec"]["containers"][0]["args"]
    assert "--leader-elect" in args and "--lease-name=refop-leader" in args
    lease_role = one(objects, "Role")
    assert lease_role["metadata"]["namespace"] == RELEASE_NAMESPACE
    assert lease_role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["refop-leader"],
            "verbs": ["get", "patch"],
        },
    ]
    assert one(cluster(replicaCount=3, leaderElection={"enabled": True}), "Deployment")["spec"]["replicas"] == 3


def test_the_deployment_passes_the_flags_and_env_the_binary_reads(helm):
    pod = one(cluster(leaderElection={"enabled": True}), "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["REFERRAL_OPERATOR_IMAGE"]["value"] == container["image"]
    assert container["args"][0] == "run"
    flags = {a.split("=")[0] for a in container["args"][1:]}
    cli = (REPO / "src" / "cli.rs").read_text()
    # clap derives `--lease-name` from `lease_name`, and takes env from `env = "..."`.
    declared = {"--" + f.replace("_", "-") for f in re.findall(r"pub (\w+): ", cli)}
    declared |= {"--" + long for long in re.findall(r'long = "([\w-]+)"', cli)}
    assert flags <= declared, f"flags the binary does not declare: {flags - declared}"
    for name in ["POD_NAMESPACE", "POD_NAME", "REFERRAL_OPERATOR_IMAGE", "OPERATOR_POD_LABELS"]:
        assert f'env = "{name}"' in cli, f"src/cli.rs no longer reads {name}"
    # The labels the operator lets through its NetworkPolicies are its pods' own.
    deployment = one(cluster(), "Deployment")
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    labels = dict(pair.split("=") for pair in env["OPERATOR_POD_LABELS"]["value"].split(","))
    assert labels == deployment["spec"]["selector"]["matchLabels"]
    assert labels.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    jobs = one(cluster(jobImage="mirror.example/refop:v9"), "Deployment")
    env = {e["name"]: e for e in jobs["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["REFERRAL_OPERATOR_IMAGE"]["value"] == "mirror.example/refop:v9"


def test_image_defaults_to_the_binarys_own_default_and_a_digest_pins_it(helm):
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    cargo = (REPO / "Cargo.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', cargo, re.M).group(1)
    assert chart["appVersion"] == version, "Chart.yaml appVersion must equal Cargo.toml's version"
    image = one(cluster(), "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    context = (REPO / "src" / "controller" / "context.rs").read_text()
    prefix = re.search(r'DEFAULT_OPERATOR_IMAGE: &str = concat!\("([^"]+)"', context).group(1)
    assert image == f"{prefix}{version}", "chart image and DEFAULT_OPERATOR_IMAGE disagree"
    digest = "sha256:" + "b" * 64
    pinned = one(cluster(image={"digest": digest}), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert pinned["image"] == f"ghcr.io/referral-dev/referral-operator@{digest}"


def test_restricted_pod_security(helm):
    for objects in (cluster(), namespaced(leaderElection={"enabled": True})):
        pod = one(objects, "Deployment")["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 65532
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for forbidden in ("hostNetwork", "hostPID", "hostIPC"):
            assert forbidden not in pod, f"{forbidden} in the operator's pod"
        # Two volumes only: the memory-backed /tmp where the MongoDB TLS files go, and
        # the secrets hash key, from a Secret, read-only, readable by the operator's
        # group only: the kubelet writes Secret files as root and gives them the pod's
        # fsGroup, so without it user 65532 could not read the key (on the node, the
        # pods failed to start with "Permission denied").
        tmp, key = pod["volumes"]
        assert tmp == {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}
        assert set(key) == {"name", "secret"}, key
        assert key["secret"]["secretName"] == "referral-operator-hash-key"
        assert key["secret"]["defaultMode"] == 0o440
        assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"] == 65532
        (container,) = pod["containers"]
        tmp_mount, key_mount = container["volumeMounts"]
        assert tmp_mount == {"name": "tmp", "mountPath": "/tmp"}
        assert key_mount["readOnly"] is True and key_mount["name"] == key["name"]
        assert f"--secrets-hash-key-file={key_mount['mountPath']}/key" in container["args"]
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["runAsNonRoot"] is True
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}
        assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        port = container["ports"][0]
        assert port["name"] == "metrics" and f"--listen=0.0.0.0:{port['containerPort']}" in container["args"]


def test_optional_objects_appear_only_when_asked(helm):
    kinds = {o["kind"] for o in cluster()}
    assert {"ServiceMonitor", "NetworkPolicy"}.isdisjoint(kinds)
    assert {"Deployment", "ServiceAccount", "Service", "PodDisruptionBudget"} <= kinds
    objects = cluster(
        metrics={"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
        networkPolicy={"enabled": True, "egress": [{"ports": [{"port": 6443}]}]},
    )
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    policy = one(objects, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"] == [{"ports": [{"port": "metrics", "protocol": "TCP"}]}]
    assert {"ports": [{"port": 6443}]} in policy["egress"]
    pdb = one(cluster(), "PodDisruptionBudget")["spec"]
    pod_labels = one(cluster(), "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pdb["maxUnavailable"] == 1 and pdb["selector"]["matchLabels"].items() <= pod_labels.items()
    assert "PodDisruptionBudget" not in {o["kind"] for o in cluster(podDisruptionBudget={"enabled": False})}


def test_notes_say_what_is_watched(helm):
    assert "every namespace" in render.notes(mode_values("cluster", []))
    text = render.notes(mode_values("namespaced", WATCHED))
    assert "team-a, team-b" in text


# ----------------------------------------------------------------- rbac ---

def rbac_golden_text(objects: list[dict[str, Any]]) -> str:
    """RBAC objects without the labels that change with every release."""
    kept = []
    for obj in objects:
        if obj["kind"] not in render.RBAC_KINDS:
            continue
        obj = yaml.safe_load(yaml.safe_dump(obj))
        labels = obj["metadata"].get("labels", {})
        for volatile in ("helm.sh/chart", "app.kubernetes.io/version"):
            labels.pop(volatile, None)
        kept.append(obj)
    header = "# Generated by tests/chart/test_chart.py; UPDATE_GENERATED=1 rewrites it. Review every change.\n"
    return header + render.dump(kept)


GOLDEN_CASES = {
    "cluster": lambda: cluster(leaderElection={"enabled": True}),
    "namespaced": lambda: namespaced(leaderElection={"enabled": True}),
}


@pytest.mark.parametrize("mode", sorted(GOLDEN_CASES))
def test_rbac_matches_the_golden_file(helm, mode):
    text = rbac_golden_text(GOLDEN_CASES[mode]())
    path = GOLDEN / f"rbac-{mode}.yaml"
    if os.environ.get("UPDATE_GENERATED") == "1":
        path.write_text(text)
    assert path.exists(), f"{path} is missing: run UPDATE_GENERATED=1 python3 -m pytest tests/chart"
    assert text == path.read_text(), (
        f"the chart's RBAC changed; if intended, run UPDATE_GENERATED=1 python3 -m pytest tests/chart "
        f"and review the diff of {path.relative_to(REPO)}"
    )


ALL_CASES = {
    "cluster": lambda: cluster(leaderElection={"enabled": True}),
    "namespaced": lambda: namespaced(leaderElection={"enabled": True}),
    "cluster-no-restores": lambda: cluster(rbac={"referralRestores": False}),
}


@pytest.mark.parametrize("mode", sorted(ALL_CASES))
def test_no_wildcards_and_no_dangerous_verbs(helm, mode):
    for role in by_kind(ALL_CASES[mode](), "Role") + by_kind(ALL_CASES[mode](), "ClusterRole"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                assert "*" not in rule.get(field, []), f"wildcard {field} in {role['metadata']['name']}: {rule}"
            assert "nonResourceURLs" not in rule
            assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(rule["verbs"]), rule


@pytest.mark.parametrize("mode", sorted(ALL_CASES))
def test_secrets_are_read_by_name_only(helm, mode):
    """Secrets are read by name, never listed or watched; the only writes are the
    generated Redis password's create and its rotation's patch (docs/rbac.md)."""
    objects = ALL_CASES[mode]()
    for role in by_kind(objects, "Role") + by_kind(objects, "ClusterRole"):
        for rule in role["rules"]:
            if "" in rule.get("apiGroups", []) and "secrets" in rule.get("resources", []):
                assert rule["verbs"] == ["get", "create", "patch"], f"{role['metadata']['name']} grants {rule['verbs']} on Secrets"
    rules = [r for role in operator_roles(objects) for r in role["rules"]]
    for verb in ("get", "create", "patch"):
        assert grants(rules, "", "secrets", verb), f"the operator must {verb} Secrets"
    for verb in ("list", "watch", "update", "delete"):
        assert not grants(rules, "", "secrets", verb), f"the operator can {verb} Secrets"


def rendered_children() -> list[dict[str, Any]]:
    """What the operator creates for the example systems (`render` snapshots)."""
    docs = []
    for path in sorted((REPO / "tests" / "golden").glob("*.rendered.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    assert docs, "tests/golden/*.rendered.yaml is empty"
    return docs


# Plural resource names of the kinds the operator builds. A kind missing here fails
# the test below on purpose: decide its RBAC before the operator may create it.
PLURALS = {
    "ConfigMap": "configmaps",
    "CronJob": "cronjobs",
    "Deployment": "deployments",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "NetworkPolicy": "networkpolicies",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "PrometheusRule": "prometheusrules",
    "Role": "roles",
    "RoleBinding": "rolebindings",
    "Service": "services",
    "ServiceAccount": "serviceaccounts",
    "ServiceMonitor": "servicemonitors",
    "StatefulSet": "statefulsets",
}


def resource_of(obj: dict[str, Any]) -> tuple[str, str]:
    api_version = obj["apiVersion"]
    group = api_version.split("/")[0] if "/" in api_version else ""
    assert obj["kind"] in PLURALS, f"the operator builds a {obj['kind']}: add its RBAC to the chart and PLURALS"
    return group, PLURALS[obj["kind"]]


@pytest.mark.parametrize("mode", ["cluster", "namespaced"])
def test_the_operator_may_apply_and_prune_every_child_it_builds(helm, mode):
    rules = [r for role in operator_roles(ALL_CASES[mode]()) for r in role["rules"]]
    kinds = {}
    for child in rendered_children():
        kinds[child["kind"]] = resource_of(child)
    assert {"Deployment", "StatefulSet", "CronJob", "Role", "PersistentVolumeClaim"} <= set(kinds), kinds
    for kind, (group, resource) in sorted(kinds.items()):
        wanted = CLAIM_VERBS if kind == "PersistentVolumeClaim" else WRITE_VERBS
        missing = sorted(v for v in wanted if not grants(rules, group, resource, v))
        assert not missing, f"the operator cannot {missing} {group or 'core'}/{resource} ({kind})"
    assert not grants(rules, "", "persistentvolumeclaims", "delete"), "claims hold data: never deleted"
    for group, resource, verbs in [
        ("batch", "jobs", {"create", "get", "list", "watch", "delete"}),
        ("events.k8s.io", "events", {"create", "patch"}),
        ("referral.dev", "referralsystems", {"get", "list", "watch"}),
        ("referral.dev", "referralsystems/status", {"get", "patch"}),
        ("referral.dev", "referralrestores", {"get", "list", "watch"}),
        ("referral.dev", "referralrestores/status", {"get", "patch"}),
        ("", "pods", {"list"}),
    ]:
        missing = sorted(v for v in verbs if not grants(rules, group, resource, v))
        assert not missing, f"the operator cannot {missing} {group}/{resource}"
    assert not grants(rules, "referral.dev", "referralsystems", "patch"), "the operator never writes spec"
    without = [r for role in operator_roles(cluster(rbac={"referralRestores": False})) for r in role["rules"]]
    assert not grants(without, "referral.dev", "referralrestores", "get")
    assert not grants(without, "", "pods", "list"), "only restores list pods"
    for verb in ["get", "watch", "create", "patch", "delete"]:
        assert not grants(rules, "", "pods", verb), f"the operator never needs to {verb} pods"


@pytest.mark.parametrize("mode", ["cluster", "namespaced"])
def test_the_operator_holds_every_right_it_grants(helm, mode):
    """The API server refuses to create a Role, or bind one, that grants more than
    the creator holds (RBAC escalation prevention). Every Role the operator builds
    must therefore be covered by the operator's own rules."""
    rules = [r for role in operator_roles(ALL_CASES[mode]()) for r in role["rules"]]
    built_roles = [c for c in rendered_children() if c["kind"] == "Role"]
    assert built_roles, "the example systems build no Role; the check would prove nothing"
    for role in built_roles:
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        for name in rule.get("resourceNames") or [None]:
                            assert grants(rules, group, resource, verb, name), (
                                f"Role {role['metadata']['name']} grants {verb} on {group}/{resource}"
                                f" ({name}) which the operator itself lacks"
                            )


# -------------------------------------------------------------- schemas ---

@pytest.mark.parametrize("mode", sorted(LINT_CASES))
def test_rendered_objects_match_the_kubernetes_schemas(helm, kubernetes_validate, mode):
    values = render.merge(LINT_CASES[mode], {})
    builtin = [
        o for o in render_objects(values, namespace=RELEASE_NAMESPACE)
        if not o["apiVersion"].startswith("monitoring.coreos.com/")
    ]
    assert len(builtin) >= 6
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "chart.yaml"
        path.write_text(render.dump(builtin))
        out = subprocess.run(
            [kubernetes_validate, "--strict", "--no-warn", "-k", KUBERNETES_VERSION, str(path)],
            capture_output=True,
            text=True,
        )
    assert out.returncode == 0, f"kubernetes-validate refused the chart ({mode}):\n{out.stdout}\n{out.stderr}"
    passed = [line for line in out.stdout.splitlines() if " passed for resource " in line]
    assert len(passed) == len(builtin), f"every object must be checked, not skipped:\n{out.stdout}"


def test_the_secrets_hash_key_is_a_secret_the_deployment_only_refers_to(helm):
    objects = cluster()
    (secret,) = [o for o in objects if o["kind"] == "Secret"]
    assert secret["metadata"]["name"] == "referral-operator-hash-key"
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    key = base64.b64decode(secret["data"]["key"])
    assert len(key) >= 16
    deployment = json.dumps(one(objects, "Deployment"))
    assert secret["data"]["key"] not in deployment and key.decode() not in deployment
    # A Secret of the user's: the chart makes none and mounts that one.
    objects = cluster(secretsHashKey={"existingSecret": "my-hash-key"})
    assert not [o for o in objects if o["kind"] == "Secret"]
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == "my-hash-key"
