"""Validation of generated manifests against the KubeRay CRD schemas and the Kubernetes schemas.

The CRDs are data from `../shared/kuberay-crds/` (not part of the project): tests that need them
skip with a clear reason when that folder is absent.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

KUBERAY_VERSION = "v1.6.2"
K8S_VERSION = "1.37.0"
REPO = Path(__file__).resolve().parents[2]


def crd_dir() -> Path:
    """Where the KubeRay CRDs are: $DML_KUBERAY_CRDS, or ../shared/kuberay-crds/<version> beside the repo."""
    override = os.environ.get("DML_KUBERAY_CRDS")
    return Path(override) if override else REPO.parent / "shared" / "kuberay-crds" / KUBERAY_VERSION


def require_crds() -> Path:
    path = crd_dir()
    if not (path / "ray.io_rayclusters.yaml").is_file():
        pytest.skip(f"KubeRay CRDs not found at {path} (they live in ../shared; set DML_KUBERAY_CRDS to point at them)")
    return path


def _strict(schema: Any) -> Any:
    """Reject unknown fields like `kubectl apply --validate=strict`: an object schema that lists its
    properties and does not preserve unknown fields gets `additionalProperties: false`."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            out.get("type") == "object"
            and "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@functools.cache
def crd_validator(kind: str) -> jsonschema.Draft7Validator:
    """A strict validator for `kind` (RayCluster, RayJob) from the storage version of its CRD."""
    plural = {"RayCluster": "rayclusters", "RayJob": "rayjobs"}[kind]
    crd = yaml.safe_load((require_crds() / f"ray.io_{plural}.yaml").read_text())
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    schema = _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
    return jsonschema.Draft7Validator(schema)


def crd_errors(manifest: Mapping[str, Any]) -> list[str]:
    """Every CRD schema error of a RayCluster/RayJob, as `path: message`."""
    validator = crd_validator(str(manifest["kind"]))
    return [
        f"{'.'.join(str(p) for p in err.absolute_path)}: {err.message}" for err in validator.iter_errors(dict(manifest))
    ]


def pod_templates(manifest: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(path, pod template) for every pod a RayCluster/RayJob describes."""
    spec = manifest["spec"]
    cluster = spec["rayClusterSpec"] if manifest["kind"] == "RayJob" else spec
    yield "headGroupSpec.template", cluster["headGroupSpec"]["template"]
    for i, group in enumerate(cluster.get("workerGroupSpecs", [])):
        yield f"workerGroupSpecs[{i}].template", group["template"]
    if manifest["kind"] == "RayJob" and "submitterPodTemplate" in spec:
        yield "submitterPodTemplate", spec["submitterPodTemplate"]


def k8s_errors(obj: Mapping[str, Any]) -> list[str]:
    """Strict Kubernetes schema errors of a core object (Pod, NetworkPolicy, ...)."""
    try:
        kubernetes_validate.validate(dict(obj), K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'.'.join(str(p) for p in exc.path)}: {exc.message}"]
    return []


def pod_errors(manifest: Mapping[str, Any]) -> list[str]:
    """Strict Kubernetes Pod schema errors of every pod template embedded in `manifest`."""
    errors = []
    for path, template in pod_templates(manifest):
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "schema-check", **template.get("metadata", {})},
            "spec": template["spec"],
        }
        errors += [f"{path}: {e}" for e in k8s_errors(pod)]
    return errors
