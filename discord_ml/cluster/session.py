"""`ClusterSession`: one cluster around a piece of work, the way dagster-ray's `yield_for_execution`
and dagster-k8s's `try/finally` hold theirs.

Opening checks capacity, creates, waits until ready and connects; if any of that fails or is
interrupted the cluster is deleted, so a failed start leaves nothing behind. Closing applies the
cleanup policy. The Dagster resource, `dml cluster create` and `dml job submit` on an ephemeral
cluster all go through it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from enum import StrEnum
from types import TracebackType

from discord_ml.cluster.provider import (
    CapacityError,
    ClusterConnection,
    ClusterError,
    ClusterExistsError,
    ClusterInfo,
    ClusterProvider,
    require_capacity,
)
from discord_ml.cluster.spec import ClusterSpec


class CleanupPolicy(StrEnum):
    """When a session deletes its cluster."""

    ALWAYS = "always"
    ON_FAILURE_KEEP = "on_failure_keep"  # keep it for debugging when the work failed
    NEVER = "never"

    def keeps(self, *, failed: bool) -> bool:
        """Whether the cluster outlives the session."""
        return self is CleanupPolicy.NEVER or (self is CleanupPolicy.ON_FAILURE_KEEP and failed)


class ClusterSession:
    """Create → wait → connect one cluster; delete it on a failed start and, per `cleanup`, at the end.

    Use as a context manager (`with ClusterSession(...) as connection:`), or call `open` and `close`
    where the end is decided elsewhere (a Dagster run's teardown).
    """

    def __init__(self, provider: ClusterProvider, spec: ClusterSpec, *, ready_timeout_s: float = 600.0,
                 wait: bool = True, allow_pending: bool = False, cleanup: CleanupPolicy = CleanupPolicy.ALWAYS,
                 on_progress: Callable[[ClusterInfo], None] | None = None,
                 on_warning: Callable[[str], None] | None = None) -> None:  # fmt: skip
        """
        Args:
            provider: the backend that creates the cluster.
            spec: the cluster (validated already).
            ready_timeout_s: how long `open` waits for it to be ready.
            wait: wait until ready and connect; False returns right after creation.
            allow_pending: create even when quota or nodes cannot hold it now (`on_warning` is told).
            cleanup: whether `close` deletes it.
            on_progress: called with each status the cluster passes through while starting.
            on_warning: called with what will make the cluster pend (with `allow_pending`).
        """
        self.provider, self.spec = provider, spec
        self.ready_timeout_s, self.wait, self.allow_pending = ready_timeout_s, wait, allow_pending
        self.cleanup = cleanup
        self.on_progress, self.on_warning = on_progress, on_warning
        self.info: ClusterInfo | None = None
        self.connection: ClusterConnection | None = None

    @property
    def name(self) -> str:
        return self.spec.cluster_name

    def open(self) -> ClusterInfo:
        """Create the cluster and, with `wait`, wait for it and connect (`self.connection`).

        Raises:
            CapacityError: it cannot fit now and `allow_pending` is off (nothing was created).
            ClusterExistsError: the name is taken (that cluster is left alone).
            ClusterError: it did not start; it has been deleted.
        """
        try:
            require_capacity(self.provider, self.spec)
        except ClusterError as exc:
            problem = exc if isinstance(exc, CapacityError) else ClusterError(f"capacity could not be checked: {exc}")
            if not self.allow_pending:
                raise problem from (None if problem is exc else exc)
            if self.on_warning is not None:  # it is created anyway, and waits
                self.on_warning(str(problem))
        namespace = self.spec.namespace
        try:
            self.info = self.provider.create(self.spec)
        except ClusterExistsError:
            raise  # someone else's cluster
        except BaseException:
            self.provider.delete(self.name, namespace=namespace)  # a half-made one
            raise
        try:
            if self.wait:
                self.info = self.provider.wait_ready(self.name, namespace=namespace, timeout=self.ready_timeout_s,
                                                     on_progress=self.on_progress)  # fmt: skip
                self.connection = self.provider.connect(self.name, namespace=namespace)
        except BaseException:
            # A cluster that never became ready is removed whatever the cleanup policy says.
            self.provider.delete(self.name, namespace=namespace)
            self.info = self.connection = None
            raise
        return self.info

    def close(self, *, failed: bool) -> bool:
        """Apply the cleanup policy; True when the cluster was deleted."""
        return not self.cleanup.keeps(failed=failed) and self.delete()

    def delete(self) -> bool:
        """Delete the cluster now, whatever the policy; False when there was none."""
        if self.info is None:
            return False
        self.provider.delete(self.name, namespace=self.spec.namespace)
        self.info = self.connection = None
        return True

    @contextlib.contextmanager
    def holding(self, *, on_error: Callable[[str], None] | None = None) -> Iterator[None]:
        """While the block runs, tell the provider every `HEARTBEAT_S` that something holds the cluster,
        so idle reaping never takes it from running work (whatever its jobs are doing)."""
        from discord_ml.cluster.activity import HEARTBEAT_S

        stop = threading.Event()

        def beat() -> None:
            while True:
                try:
                    self.provider.touch(self.name, namespace=self.spec.namespace)
                except ClusterError as exc:  # the job's own follower reports a lost cluster
                    if on_error is not None:
                        on_error(f"heartbeat for {self.name} not recorded: {exc}")
                if stop.wait(HEARTBEAT_S):
                    return

        thread = threading.Thread(target=beat, name=f"heartbeat {self.name}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=30)

    def __enter__(self) -> ClusterConnection:
        self.open()
        assert self.connection is not None, "a session used as a context manager waits for its cluster"
        return self.connection

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:  # fmt: skip
        self.close(failed=error is not None)
