#!/usr/bin/env python3
"""Renders charts/referral-operator with Helm's own engine (helm-python-sdk, Helm v4,
offline) into one YAML stream, the way `helm template` would.

The e2e suite installs the operator from this output:

    python3 tests/chart/render.py --mode namespaced --namespace refop-system \\
        --watch team-a --watch team-b --only rbac -o /tmp/rbac.yaml

`--only rbac` keeps the ServiceAccount and the RBAC objects (what
`kubectl auth can-i --list --as=system:serviceaccount:NS:NAME` needs); without it
every object is written, CRDs first when `--include-crds` is given.

Also importable: the chart tests use `render_objects` and `load_chart`.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Any

import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "charts" / "referral-operator"
DEFAULT_RELEASE = "referral-operator"

RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")

# Helm's install order (pkg/release/util/kind_sorter.go), so `kubectl apply` of the
# output creates identities before the bindings and workloads that name them.
INSTALL_ORDER = (
    "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "PodDisruptionBudget", "ServiceAccount",
    "Secret", "ConfigMap", "StorageClass", "PersistentVolume", "PersistentVolumeClaim",
    "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Service",
    "DaemonSet", "Pod", "ReplicaSet", "Deployment", "HorizontalPodAutoscaler", "StatefulSet", "Job",
    "CronJob", "Ingress", "APIService",
)


def install_rank(obj: dict[str, Any]) -> int:
    kind = obj.get("kind", "")
    return INSTALL_ORDER.index(kind) if kind in INSTALL_ORDER else len(INSTALL_ORDER)


class RenderError(Exception):
    """The chart refused the values or failed to render; the message says why."""


def _helm():
    try:
        import helm_python
    except ImportError as error:  # pragma: no cover - depends on the machine
        raise RenderError(
            "the helm-python-sdk package is missing: pip install helm-python-sdk "
            "(scripts/test-all.sh installs it)"
        ) from error
    return helm_python


def load_chart(path: pathlib.Path = CHART_DIR):
    return _helm().Chart.load(str(path))


def mode_values(mode: str, watch: list[str]) -> dict[str, Any]:
    """Values that select cluster or namespaced mode."""
    if mode == "cluster":
        return {"watch": {"mode": "cluster"}}
    return {"watch": {"mode": "namespaced", "namespaces": list(watch)}}


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of plain dicts, `extra` winning (what repeated -f files do)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def render_manifests(
    values: dict[str, Any] | None = None,
    *,
    release: str = DEFAULT_RELEASE,
    namespace: str = "referral-system",
    chart_dir: pathlib.Path = CHART_DIR,
) -> dict[str, str]:
    """Template path -> rendered text, NOTES.txt included."""
    helm = _helm()
    chart = load_chart(chart_dir)
    try:
        with chart:
            return chart.render(values or {}, name=release, namespace=namespace, is_install=True)
    except helm.HelmError as error:
        raise RenderError(str(error)) from error


def render_objects(
    values: dict[str, Any] | None = None,
    *,
    release: str = DEFAULT_RELEASE,
    namespace: str = "referral-system",
    include_crds: bool = False,
    chart_dir: pathlib.Path = CHART_DIR,
) -> list[dict[str, Any]]:
    """Every object the chart renders, in a stable order (CRDs first when asked)."""
    manifests = render_manifests(values, release=release, namespace=namespace, chart_dir=chart_dir)
    objects: list[dict[str, Any]] = []
    if include_crds:
        with load_chart(chart_dir) as chart:
            for crd in sorted(chart.crds, key=lambda c: c["filename"]):
                objects.extend(doc for doc in yaml.safe_load_all(crd["data"]) if doc)
    templated: list[dict[str, Any]] = []
    for path in sorted(manifests):
        if path.endswith("NOTES.txt"):
            continue
        templated.extend(doc for doc in yaml.safe_load_all(manifests[path]) if doc)
    # sorted() is stable: within a kind, template order stays.
    return objects + sorted(templated, key=install_rank)


def notes(values: dict[str, Any] | None = None, **kwargs: Any) -> str:
    manifests = render_manifests(values, **kwargs)
    return next((text for path, text in manifests.items() if path.endswith("NOTES.txt")), "")


def dump(objects: list[dict[str, Any]]) -> str:
    return "".join("---\n" + yaml.safe_dump(obj, sort_keys=False) for obj in objects)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["cluster", "namespaced"], default="cluster")
    parser.add_argument("--namespace", default="referral-system", help="namespace of the release")
    parser.add_argument("--release", default=DEFAULT_RELEASE, help="release name")
    parser.add_argument(
        "--watch", action="append", default=[], metavar="NS", help="namespace to watch (namespaced mode; repeatable)"
    )
    parser.add_argument("-f", "--values", action="append", default=[], metavar="FILE", help="values file (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="K=V", help="like helm --set (repeatable)")
    parser.add_argument("--only", choices=["all", "rbac"], default="all")
    parser.add_argument("--include-crds", action="store_true", help="put the chart's CRDs first")
    parser.add_argument("-o", "--output", default="-", help="file to write; - for standard output")
    args = parser.parse_args(argv)

    if args.mode == "namespaced" and not args.watch:
        parser.error("--mode namespaced needs at least one --watch NAMESPACE")
    values: dict[str, Any] = {}
    for file in args.values:
        values = merge(values, yaml.safe_load(pathlib.Path(file).read_text()) or {})
    values = merge(values, mode_values(args.mode, args.watch))
    helm = _helm()
    for expression in args.set:
        try:
            values = merge(values, helm.parse_set_string(expression))
        except helm.HelmError as error:
            print(f"error: --set {expression}: {error}", file=sys.stderr)
            return 2
    try:
        objects = render_objects(
            values, release=args.release, namespace=args.namespace, include_crds=args.include_crds
        )
    except RenderError as error:
        print(f"error: the chart refused these values:\n{error}", file=sys.stderr)
        return 1
    if args.only == "rbac":
        objects = [o for o in objects if o.get("kind") in RBAC_KINDS]
    text = dump(objects)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        pathlib.Path(args.output).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
