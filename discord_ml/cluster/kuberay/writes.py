"""Creating a cluster's objects so that a lost answer cannot leave a stray or touch someone else's.

Each object of one create is stamped with the same attempt mark (an annotation). A POST whose answer
was lost (a proxy's 503 after the API server wrote it, a dropped connection) is retried by the
provider and answered 409; reading the object back and finding our mark tells our own write from
another's. On failure, every object that carries our mark is deleted, and only those.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from discord_ml.cluster.conventions import LABEL_PREFIX
from discord_ml.cluster.provider import ClusterError, ClusterExistsError

ATTEMPT_ANNOTATION = f"{LABEL_PREFIX}/create-attempt"
Call = Callable[..., Any]


@dataclass(frozen=True)
class Write:
    """One object to create: its body and the API calls that create, read and delete it."""

    kind: str
    name: str
    body: dict[str, Any]
    create: Callable[[dict[str, Any]], Any]
    read: Callable[[], Any]
    delete: Callable[[], Any]
    reuse_existing: bool = False  # an existing one that is not ours is used as it is, never deleted

    @classmethod
    def typed(cls, kind: str, body: dict[str, Any], api: Any, noun: str, namespace: str, **options: Any) -> Write:
        """A write through a typed client API (`create_namespaced_<noun>`, `read_…`, `delete_…`)."""
        name = body["metadata"]["name"]
        return cls(
            kind,
            name,
            body,
            functools.partial(getattr(api, f"create_namespaced_{noun}"), namespace),
            functools.partial(getattr(api, f"read_namespaced_{noun}"), name, namespace),
            functools.partial(getattr(api, f"delete_namespaced_{noun}"), name, namespace),
            **options,
        )


def attempt_of(obj: Any) -> str | None:
    """The attempt mark of an object as the client returns it (a dict, or a model with `.metadata`)."""
    if isinstance(obj, dict):
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
    else:
        annotations = getattr(getattr(obj, "metadata", None), "annotations", None) or {}
    return annotations.get(ATTEMPT_ANNOTATION)


def create_all(call: Call, writes: list[Write], attempt: str, *, exists: Callable[[Write], str]) -> None:
    """Create each object in order, stamped with `attempt`; on any failure delete what carries the mark.

    Raises:
        ClusterExistsError: an object of that name exists and is not ours (message from `exists`).
        ClusterError: the API refused a write; nothing of ours is left.
    """
    try:
        for write in writes:
            annotations = write.body.setdefault("metadata", {}).setdefault("annotations", {})
            annotations[ATTEMPT_ANNOTATION] = attempt
            try:
                call(write.create, write.body)
            except ClusterExistsError:
                if attempt_of(call(write.read)) == attempt:
                    continue  # our own write, whose answer was lost
                if not write.reuse_existing:
                    raise ClusterExistsError(exists(write)) from None
    except BaseException:
        undo(call, writes, attempt)
        raise


def undo(call: Call, writes: list[Write], attempt: str) -> None:
    """Delete every object of `writes` that carries `attempt` (any of them may have been written)."""
    for write in reversed(writes):
        with contextlib.suppress(ClusterError):  # gone already, or the API is failing: nothing more to do
            if attempt_of(call(write.read)) == attempt:
                call(write.delete)
