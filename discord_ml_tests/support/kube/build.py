"""Build the real control plane and the KubeRay operator from the Go modules in `testbed/`, once per
set of versions, into a cache outside the clone (`$DML_TESTBED_CACHE`, else ~/.cache/discord_ml/testbed).

The cache key hashes every go.mod, go.sum and Go source under `testbed/` and the Go version, so a
changed pin builds anew and an unchanged one is reused by later runs and by CI on the same machine.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTBED = Path(__file__).resolve().parents[3] / "testbed"
KUBERNETES_VERSION = "v1.37.2"
KUBERAY_VERSION = "v1.6.2"
ETCD_VERSION = "v3.6.17"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "ray-operator")


class ToolchainMissingError(RuntimeError):
    """Go is not installed, so the testbed cannot be built."""


def go() -> str:
    found = shutil.which("go")
    if found is None:
        raise ToolchainMissingError(
            "the kube tier builds the control plane from Go modules: install Go 1.26 or later "
            "(https://go.dev/doc/install, or `apt-get install golang`) and keep the Go module proxy reachable"
        )
    return found


def cache_root() -> Path:
    return Path(os.environ.get("DML_TESTBED_CACHE") or Path.home() / ".cache" / "discord_ml" / "testbed")


def cache_key() -> str:
    digest = hashlib.sha256()
    for path in sorted(TESTBED.rglob("*")):
        if path.is_file() and path.suffix in (".go", ".mod", ".sum"):
            digest.update(str(path.relative_to(TESTBED)).encode() + b"\0" + path.read_bytes())
    version = subprocess.run([go(), "env", "GOVERSION"], capture_output=True, text=True, check=True).stdout
    digest.update(version.encode())
    return f"k8s-{KUBERNETES_VERSION}-kuberay-{KUBERAY_VERSION}-etcd-{ETCD_VERSION}-{digest.hexdigest()[:12]}"


def _version_flags() -> str:
    major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]  # no symbol tables: smaller binaries, a shorter link
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {package}.gitVersion={KUBERNETES_VERSION}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
        ]
    return " ".join(flags)


def ensure_built(log: Path | None = None) -> Path:
    """The directory holding every testbed binary, built first if this set of versions has none yet."""
    target = cache_root() / cache_key()
    if all((target / name).is_file() for name in BINARIES):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly -buildvcs=false"}
    steps = [
        (TESTBED / "etcd", ["build", "-trimpath", "-ldflags=-s -w", "-o", str(staging / "etcd"), "."]),
        (
            TESTBED / "controlplane",
            ["build", "-trimpath", f"-ldflags={_version_flags()}", "-o", str(staging), "./cmd/..."],
        ),
        (
            TESTBED / "kuberay",
            [
                "build",
                "-trimpath",
                "-ldflags=-s -w",
                "-o",
                str(staging / "ray-operator"),
                "github.com/ray-project/kuberay/ray-operator",
            ],
        ),
    ]
    out = open(log, "a") if log else sys.stderr  # noqa: SIM115
    try:
        for directory, args in steps:
            started = time.monotonic()
            done = subprocess.run([go(), *args], cwd=directory, env=env, stdout=out, stderr=out, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"building {directory.name} failed (go {' '.join(args)}); see {log or 'stderr'}")
            print(f"built {directory.name} in {time.monotonic() - started:.0f}s", file=out, flush=True)
        staging.replace(target) if not target.exists() else shutil.rmtree(staging)
    finally:
        if log:
            out.close()
        shutil.rmtree(staging, ignore_errors=True)
    return target


if __name__ == "__main__":
    print(ensure_built())
