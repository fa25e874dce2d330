"""A real Kubernetes control plane on this machine: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and the KubeRay operator, built from Go modules (`build.py`) and run as local
processes on loopback ports. No container runtime: pods are scheduled but only a node agent runs them.

    with Testbed(tmp_dir) as bed:   # certificates, processes, CRDs, a kubeconfig
        os.environ["KUBECONFIG"] = str(bed.kubeconfig)

`python -m discord_ml_tests.support.kube.testbed` starts one and prints its kubeconfig until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from discord_ml.cluster.local.processes import free_ports, processes_using
from discord_ml_tests.support.kube.build import KUBERAY_VERSION, ensure_built, go
from discord_ml_tests.support.kube.certs import make_pki

log = logging.getLogger(__name__)
SERVICE_CIDR = "10.96.0.0/24"  # answered by nothing: `unreachable` route while the testbed runs
KUBERNETES_SERVICE_IP = "10.96.0.1"
# Identities: the admin (kubectl's), and one per control-plane component as kubeadm makes them.
CLIENTS = {
    "admin": ("testbed-admin", ["system:masters"]),
    "controller-manager": ("system:kube-controller-manager", []),
    "scheduler": ("system:kube-scheduler", []),
    "kubelet-client": ("kube-apiserver-kubelet-client", ["system:masters"]),
    "operator": ("kuberay-operator", ["system:masters"]),
}


class TestbedError(RuntimeError):
    """The testbed did not come up; the message names the component and the tail of its log."""


class Testbed:
    """One control plane in `root` (certificates, etcd data, logs, kubeconfigs)."""

    __test__ = False  # not a pytest class

    def __init__(self, root: Path) -> None:
        self.root = root
        self.logs = root / "logs"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.server = ""
        self.kubeconfig = root / "admin.kubeconfig"
        self._route_added = False

    # --- start / stop ------------------------------------------------------------------------

    def __enter__(self) -> Testbed:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self, timeout: float = 120.0) -> None:
        started = time.monotonic()
        binaries = ensure_built(self.root.parent / "testbed-build.log")
        self.logs.mkdir(parents=True, exist_ok=True)
        etcd_port, peer_port, api_port = free_ports(3)
        pki = make_pki(
            self.root / "pki",
            clients=CLIENTS,
            hosts=[
                "127.0.0.1",
                KUBERNETES_SERVICE_IP,
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
        )
        self.pki = pki
        self.server = f"https://127.0.0.1:{api_port}"
        self._blackhole_services()
        self._spawn(
            "etcd",
            [
                str(binaries / "etcd"),
                "--data-dir",
                str(self.root / "etcd"),
                "--name",
                "testbed",
                "--listen-client-urls",
                f"http://127.0.0.1:{etcd_port}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{etcd_port}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer_port}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer_port}",
                "--initial-cluster",
                f"testbed=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync",
                "--log-level",
                "warn",
                "--listen-metrics-urls",
                "",
            ],
        )
        self._spawn(
            "kube-apiserver",
            [
                str(binaries / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                f"--secure-port={api_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",  # a loopback address cannot be the kubernetes Service's endpoint
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--tls-cert-file={pki.cert('apiserver')}",
                f"--tls-private-key-file={pki.key('apiserver')}",
                f"--client-ca-file={pki.ca}",
                "--authorization-mode=Node,RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki.root / 'sa.pub'}",
                f"--service-account-signing-key-file={pki.root / 'sa.key'}",
                f"--kubelet-client-certificate={pki.cert('kubelet-client')}",
                f"--kubelet-client-key={pki.key('kubelet-client')}",
                f"--kubelet-certificate-authority={pki.ca}",
                "--kubelet-preferred-address-types=InternalIP",
                "--enable-admission-plugins=NodeRestriction",
                "--allow-privileged=false",
                "--profiling=false",
                f"--cert-dir={self.root / 'apiserver-certs'}",
                "--v=1",
            ],
        )
        self._wait_ready("kube-apiserver", "/readyz", deadline=started + timeout)
        self.kubeconfig = self._kubeconfig("admin")
        self._spawn(
            "kube-controller-manager",
            [
                str(binaries / "kube-controller-manager"),
                f"--kubeconfig={self._kubeconfig('controller-manager')}",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--root-ca-file={pki.ca}",
                f"--service-account-private-key-file={pki.root / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--cluster-signing-cert-file={pki.ca}",
                f"--cluster-signing-key-file={pki.root / 'ca.key'}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_ports(1)[0]}",
                "--controllers=*,-nodeipam",
                "--profiling=false",
                "--v=1",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(binaries / "kube-scheduler"),
                f"--kubeconfig={self._kubeconfig('scheduler')}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_ports(1)[0]}",
                "--profiling=false",
                "--v=1",
            ],
        )
        self.apply_crds()
        metrics, probes = free_ports(2)
        self._spawn(
            "ray-operator",
            [
                str(binaries / "ray-operator"),
                "--enable-leader-election=false",
                f"--metrics-addr=127.0.0.1:{metrics}",
                f"--health-probe-bind-address=127.0.0.1:{probes}",
                "--log-stdout-encoder=console",
            ],
            env={"KUBECONFIG": str(self._kubeconfig("operator"))},
        )
        self._wait_default_service_account(deadline=started + timeout)

    def stop(self) -> None:
        """Stop the components in the reverse order of their start (etcd last, so none hangs on a
        missing store), then remove the route."""
        for name, proc in reversed(self.procs.items()):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop on SIGTERM in 10s; killing it", name)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()
        if self._route_added:
            removed = subprocess.run(
                ["ip", "route", "del", "unreachable", SERVICE_CIDR], check=False, capture_output=True
            )
            self._route_added = removed.returncode != 0  # still there: `leftovers()` says so

    def leftovers(self) -> list[str]:
        """What a stopped testbed left on the machine: processes naming its directory (in their command
        line or environment), and its route (none, if stop worked)."""
        deadline = time.monotonic() + 10  # a killed group's members may still be exiting
        while (pids := processes_using(str(self.root))) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [f"process {pid}" for pid in pids]
        if self._route_added:
            left.append(f"route unreachable {SERVICE_CIDR}")
        return left

    # --- helpers -----------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115  # the child holds it
        self.procs[name] = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        log.close()

    def _fail(self, name: str, what: str) -> TestbedError:
        tail = (self.logs / f"{name}.log").read_text(errors="replace").splitlines()[-25:]
        return TestbedError(f"{name} {what}; the end of its log ({self.logs / name}.log):\n" + "\n".join(tail))

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise self._fail(name, f"exited with code {proc.returncode}")

    def ssl_context(self, identity: str = "admin") -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki.ca))
        context.load_cert_chain(str(self.pki.cert(identity)), str(self.pki.key(identity)))
        return context

    def request(
        self, method: str, path: str, body: Any = None, identity: str = "admin", content_type: str = "application/json"
    ) -> Any:
        """One API call as `identity` (a client certificate of CLIENTS); the decoded JSON answer."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"{self.server}{path}", data=data, method=method, headers={"Content-Type": content_type}
        )
        with urllib.request.urlopen(req, context=self.ssl_context(identity), timeout=30) as response:
            text = response.read()
        return json.loads(text) if text.startswith(b"{") else text.decode()

    def _wait_ready(self, name: str, path: str, deadline: float) -> None:
        while True:
            self._check_alive()
            try:
                if self.request("GET", path) == "ok":
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise self._fail(name, f"did not answer {path} in time")
            time.sleep(0.2)

    def _wait_default_service_account(self, deadline: float) -> None:
        """The controller manager is working once it has made `default` ServiceAccounts."""
        while True:
            self._check_alive()
            try:
                self.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")
                return
            except urllib.error.HTTPError as e:
                if e.code != 404:
                    raise
            if time.monotonic() > deadline:
                raise self._fail("kube-controller-manager", "made no default ServiceAccount in time")
            time.sleep(0.2)

    def _kubeconfig(self, identity: str, namespace: str = "default") -> Path:
        """A kubeconfig for the client certificate `identity`."""
        user = {"client-certificate": str(self.pki.cert(identity)), "client-key": str(self.pki.key(identity))}
        return self.write_kubeconfig(identity, user, namespace)

    def write_kubeconfig(self, name: str, user: dict[str, str], namespace: str = "ml") -> Path:
        """A kubeconfig for this API server with the `user` entry given (certificate paths or a token)."""
        path = self.root / f"{name}.kubeconfig"
        cluster = {"server": self.server, "certificate-authority": str(self.pki.ca)}
        context = {"cluster": "testbed", "user": name, "namespace": namespace}
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "testbed",
                    "clusters": [{"name": "testbed", "cluster": cluster}],
                    "users": [{"name": name, "user": user}],
                    "contexts": [{"name": "testbed", "context": context}],
                }
            )
        )
        return path

    def user_kubeconfig(self, user: str, groups: list[str], namespace: str = "ml") -> Path:
        """A person's kubeconfig: a client certificate for `user` in `groups` (as an OIDC login would give)."""
        name = user.split("@", maxsplit=1)[0]
        self.pki.issue_client(name, user, groups)
        return self._kubeconfig(name, namespace)

    def service_account_kubeconfig(self, namespace: str, account: str, *, default_namespace: str = "ml") -> Path:
        """The kubeconfig of a pod running as `namespace/account`: a token from the TokenRequest API."""
        review = self.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}},
        )
        return self.write_kubeconfig(f"sa-{account}", {"token": review["status"]["token"]}, default_namespace)

    def apply_crds(self) -> None:
        """KubeRay's CRDs from the same module version as the operator, applied and Established."""
        for path in sorted(crd_dir().glob("ray.io_*.yaml")):
            crd = yaml.safe_load(path.read_text())
            try:
                self.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
            except urllib.error.HTTPError as e:
                if e.code != 409:
                    raise TestbedError(f"applying {path.name} failed: {e.code} {e.read()[:500]!r}") from e
        deadline = time.monotonic() + 30
        for name in ("rayclusters.ray.io", "rayjobs.ray.io"):
            while True:
                crd = self.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
                conditions = {c["type"]: c["status"] for c in crd.get("status", {}).get("conditions", [])}
                if conditions.get("Established") == "True":
                    break
                if time.monotonic() > deadline:
                    raise TestbedError(f"CRD {name} not Established: {conditions}")
                time.sleep(0.1)

    def _blackhole_services(self) -> None:
        """Service IPs are answered by no kube-proxy here: drop them on this machine instead of letting
        the default route carry them off it."""
        probe = subprocess.run(["ip", "route", "show", SERVICE_CIDR], capture_output=True, text=True, check=False)
        if probe.returncode == 0 and not probe.stdout.strip():
            added = subprocess.run(
                ["ip", "route", "add", "unreachable", SERVICE_CIDR], capture_output=True, check=False
            )
            self._route_added = added.returncode == 0


def crd_dir() -> Path:
    modcache = subprocess.run([go(), "env", "GOMODCACHE"], capture_output=True, text=True, check=True).stdout.strip()
    path = Path(modcache) / f"github.com/ray-project/kuberay/ray-operator@{KUBERAY_VERSION}" / "config/crd/bases"
    if not path.is_dir():  # the build downloads the module; this only happens on a cleaned module cache
        subprocess.run(
            [go(), "mod", "download", f"github.com/ray-project/kuberay/ray-operator@{KUBERAY_VERSION}"],
            check=True,
            capture_output=True,
        )
    return path


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/dml-testbed")
    shutil.rmtree(root, ignore_errors=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop cleanly under `kill` and `timeout` too
    started = time.monotonic()
    with Testbed(root) as bed:
        print(f"testbed up in {time.monotonic() - started:.1f}s; export KUBECONFIG={bed.kubeconfig}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
