"""The Kubernetes "restricted" Pod Security Standard, plus our own rules, for Ray manifests.

Two halves that must agree: builders use `hardened_*` to produce compliant pods, and
`validate_manifest` checks any manifest (ours or a user's file) and explains every violation
by its path, e.g. `spec.headGroupSpec.template.spec.containers[0].securityContext.allowPrivilegeEscalation
must be false`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from discord_ml.cluster.images import image_problem
from discord_ml.settings import get_settings

# Volume kinds the restricted profile allows.
ALLOWED_VOLUME_KINDS = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
)
_SAFE_SYSCTLS = frozenset(
    {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
     "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
     "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
     "net.ipv4.tcp_keepalive_probes"}
)  # fmt: skip
_SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
_GPU_SUFFIXES = ("/gpu",)

RAY_UID = 1000  # the `ray` user of the rayproject images
RAY_GID = 100


@dataclass(frozen=True)
class SecurityPolicy:
    """What the validator enforces beyond the restricted profile."""

    allowed_registries: tuple[str, ...] = field(default_factory=lambda: get_settings().allowed_registries)
    require_token_auth: bool = True


@dataclass(frozen=True)
class Violation:
    """One broken rule, located by its path in the manifest."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path} {self.message}"


class SecurityViolationError(ValueError):
    """A manifest breaks one or more security rules; `violations` lists each."""

    def __init__(self, violations: Sequence[Violation], *, what: str = "manifest") -> None:
        self.violations = list(violations)
        lines = "\n".join(f"  - {v}" for v in self.violations)
        super().__init__(f"{what} breaks {len(self.violations)} security rule(s):\n{lines}")


def hardened_pod_security_context() -> dict[str, Any]:
    """Pod-level securityContext meeting the restricted profile."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RAY_UID,
        "runAsGroup": RAY_GID,
        "fsGroup": RAY_GID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def hardened_container_security_context() -> dict[str, Any]:
    """Container-level securityContext meeting the restricted profile (repeated per container on purpose:
    KubeRay copies container contexts into sidecars it injects, but not the pod's)."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "runAsNonRoot": True,
        "runAsUser": RAY_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


# --- finding pod specs -------------------------------------------------------------------------


def _pod_specs(manifest: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any], str]]:
    """Yield (path, pod spec, role) for every pod a manifest will create."""
    kind = manifest.get("kind")
    spec = manifest.get("spec") or {}
    if kind == "RayCluster":
        yield from _ray_cluster_pod_specs("spec", spec)
    elif kind == "RayJob":
        yield from _ray_cluster_pod_specs("spec.rayClusterSpec", spec.get("rayClusterSpec") or {})
        submitter = spec.get("submitterPodTemplate")
        if submitter is not None:
            yield "spec.submitterPodTemplate.spec", submitter.get("spec") or {}, "submitter"
    elif kind == "Pod":
        yield "spec", spec, "pod"
    elif kind == "CronJob":
        yield "spec.jobTemplate.spec.template.spec", spec["jobTemplate"]["spec"]["template"].get("spec") or {}, "pod"
    elif isinstance(spec.get("template"), Mapping):
        yield "spec.template.spec", spec["template"].get("spec") or {}, "pod"


def _ray_cluster_pod_specs(base: str, spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any], str]]:
    head = (spec.get("headGroupSpec") or {}).get("template") or {}
    yield f"{base}.headGroupSpec.template.spec", head.get("spec") or {}, "head"
    for i, group in enumerate(spec.get("workerGroupSpecs") or []):
        yield f"{base}.workerGroupSpecs[{i}].template.spec", (group.get("template") or {}).get("spec") or {}, "worker"


# --- the rules ---------------------------------------------------------------------------------


def _check_container(
    path: str, container: Mapping[str, Any], pod_ctx: Mapping[str, Any], policy: SecurityPolicy
) -> Iterator[Violation]:
    ctx = container.get("securityContext") or {}
    sc = f"{path}.securityContext"
    if ctx.get("privileged") is True:
        yield Violation(f"{sc}.privileged", "must be false or unset")
    if ctx.get("allowPrivilegeEscalation") is not False:
        yield Violation(f"{sc}.allowPrivilegeEscalation", "must be false")
    caps = ctx.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        yield Violation(f"{sc}.capabilities.drop", "must include ALL")
    for cap in caps.get("add") or []:
        if cap != "NET_BIND_SERVICE":
            yield Violation(f"{sc}.capabilities.add", f"must not add {cap!r} (only NET_BIND_SERVICE is allowed)")
    non_root = ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot"))
    if non_root is not True:
        yield Violation(f"{sc}.runAsNonRoot", "must be true (here or in the pod securityContext)")
    if ctx.get("runAsUser") == 0:
        yield Violation(f"{sc}.runAsUser", "must not be 0 (root)")
    elif ctx.get("runAsUser", pod_ctx.get("runAsUser")) is None:
        yield Violation(f"{sc}.runAsUser", "must be set to a non-zero uid (here or in the pod securityContext)")
    # a pod-level uid 0 is reported once, at the pod
    seccomp = (ctx.get("seccompProfile") or pod_ctx.get("seccompProfile") or {}).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        yield Violation(f"{sc}.seccompProfile.type", "must be RuntimeDefault or Localhost (here or in the pod)")
    if ctx.get("procMount") not in (None, "Default"):
        yield Violation(f"{sc}.procMount", "must be Default or unset")
    yield from _check_selinux(f"{sc}.seLinuxOptions", ctx.get("seLinuxOptions") or {})
    for j, port in enumerate(container.get("ports") or []):
        if port.get("hostPort"):
            yield Violation(f"{path}.ports[{j}].hostPort", "must not be set (no host ports)")
    image = container.get("image")
    if image is not None:
        problem = image_problem(str(image), policy.allowed_registries)
        if problem:
            yield Violation(f"{path}.image", problem)
    yield from _check_gpu_resources(f"{path}.resources", container.get("resources") or {})


def _check_selinux(path: str, opts: Mapping[str, Any]) -> Iterator[Violation]:
    if opts.get("type", "") not in _SELINUX_TYPES:
        yield Violation(f"{path}.type", f"{opts.get('type')!r} is not an allowed SELinux type")
    for key in ("user", "role"):
        if opts.get(key):
            yield Violation(f"{path}.{key}", "must not be set")


def _check_gpu_resources(path: str, resources: Mapping[str, Any]) -> Iterator[Violation]:
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}
    for key in sorted(set(requests) | set(limits)):
        if not key.endswith(_GPU_SUFFIXES):
            continue
        if key not in limits:
            yield Violation(f"{path}.limits[{key}]", "must be set: GPUs are requested through limits")
        elif key in requests and str(requests[key]) != str(limits[key]):
            yield Violation(
                f"{path}.requests[{key}]",
                f"must equal limits ({requests[key]} != {limits[key]}); GPUs cannot overcommit",
            )


def _check_pod(
    path: str, pod: Mapping[str, Any], role: str, *, autoscaling: bool, policy: SecurityPolicy
) -> Iterator[Violation]:
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key) is True:
            yield Violation(f"{path}.{key}", "must be false or unset (no host namespaces)")
    pod_ctx = pod.get("securityContext") or {}
    if pod_ctx.get("runAsUser") == 0:
        yield Violation(f"{path}.securityContext.runAsUser", "must not be 0 (root)")
    if pod_ctx.get("runAsNonRoot") is False:
        yield Violation(f"{path}.securityContext.runAsNonRoot", "must not be false")
    pod_seccomp = (pod_ctx.get("seccompProfile") or {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in ("RuntimeDefault", "Localhost"):
        yield Violation(f"{path}.securityContext.seccompProfile.type", "must be RuntimeDefault or Localhost")
    yield from _check_selinux(f"{path}.securityContext.seLinuxOptions", pod_ctx.get("seLinuxOptions") or {})
    for i, sysctl in enumerate(pod_ctx.get("sysctls") or []):
        if sysctl.get("name") not in _SAFE_SYSCTLS:
            yield Violation(f"{path}.securityContext.sysctls[{i}]", f"{sysctl.get('name')!r} is not a safe sysctl")
    for i, volume in enumerate(pod.get("volumes") or []):
        kinds = [k for k in volume if k != "name"]
        for kind in kinds:
            if kind not in ALLOWED_VOLUME_KINDS:
                yield Violation(
                    f"{path}.volumes[{i}].{kind}",
                    f"volume kind {kind!r} is not allowed (allowed: {', '.join(sorted(ALLOWED_VOLUME_KINDS))})",
                )
    needs_token = role == "head" and autoscaling
    if pod.get("automountServiceAccountToken") is not False and not needs_token:
        yield Violation(
            f"{path}.automountServiceAccountToken",
            "must be false (only the head of an autoscaling cluster needs API access)",
        )
    for list_name in ("initContainers", "containers", "ephemeralContainers"):
        for i, container in enumerate(pod.get(list_name) or []):
            yield from _check_container(f"{path}.{list_name}[{i}]", container, pod_ctx, policy)


def _check_ray_cluster_spec(base: str, spec: Mapping[str, Any], policy: SecurityPolicy) -> Iterator[Violation]:
    head = spec.get("headGroupSpec") or {}
    if head.get("serviceType", "ClusterIP") != "ClusterIP":
        yield Violation(
            f"{base}.headGroupSpec.serviceType", "must be ClusterIP (dashboard not exposed outside the cluster)"
        )
    if head.get("enableIngress") is True:
        yield Violation(
            f"{base}.headGroupSpec.enableIngress", "must be false (dashboard not exposed through an Ingress)"
        )
    if policy.require_token_auth and (spec.get("authOptions") or {}).get("mode") != "token":
        yield Violation(f"{base}.authOptions.mode", "must be 'token' (Ray token authentication)")
    if spec.get("enableInTreeAutoscaling") is True:
        options = spec.get("autoscalerOptions") or {}
        sidecar = {"securityContext": options.get("securityContext"), "image": options.get("image")}
        yield from _check_container(f"{base}.autoscalerOptions", sidecar, {}, policy)


def validate_manifest(manifest: Mapping[str, Any], policy: SecurityPolicy | None = None) -> list[Violation]:
    """Every security violation in `manifest` (RayCluster, RayJob, or any pod-bearing workload)."""
    policy = policy or SecurityPolicy()
    violations: list[Violation] = []
    kind = manifest.get("kind")
    spec = manifest.get("spec") or {}
    cluster_spec: Mapping[str, Any] = {}
    if kind == "RayCluster":
        cluster_spec = spec
        violations += _check_ray_cluster_spec("spec", spec, policy)
    elif kind == "RayJob":
        cluster_spec = spec.get("rayClusterSpec") or {}
        violations += _check_ray_cluster_spec("spec.rayClusterSpec", cluster_spec, policy)
        if spec.get("submissionMode", "K8sJobMode") == "K8sJobMode" and "submitterPodTemplate" not in spec:
            violations.append(
                Violation("spec.submitterPodTemplate", "must be set so the job submitter pod is hardened too")
            )
    autoscaling = cluster_spec.get("enableInTreeAutoscaling") is True
    for path, pod, role in _pod_specs(manifest):
        violations += _check_pod(path, pod, role, autoscaling=autoscaling, policy=policy)
    return violations


def validate_manifests(manifests: Sequence[Mapping[str, Any]], policy: SecurityPolicy | None = None) -> list[Violation]:
    """Violations of several manifests, each path prefixed with the object it is in."""
    out: list[Violation] = []
    for doc in manifests:
        name = f"{doc.get('kind', '?')}/{(doc.get('metadata') or {}).get('name', '?')}"
        out += [Violation(f"{name}: {v.path}", v.message) for v in validate_manifest(doc, policy)]
    return out


def ensure_secure(manifest: Mapping[str, Any], policy: SecurityPolicy | None = None) -> None:
    """Raise SecurityViolationError if `manifest` breaks any rule."""
    violations = validate_manifest(manifest, policy)
    if violations:
        name = (manifest.get("metadata") or {}).get("name", "?")
        raise SecurityViolationError(violations, what=f"{manifest.get('kind', 'manifest')} {name!r}")
