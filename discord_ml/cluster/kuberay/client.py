"""The Kubernetes client's configuration and how its errors read: each way of not having a usable
cluster (no kubeconfig, a broken one, an unknown context, the API down, credentials rejected, a call
forbidden) becomes one line naming what is wrong and what to do."""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

from discord_ml.cluster.provider import (
    ClusterError,
    ClusterExistsError,
    ClusterForbiddenError,
    ClusterNotFoundError,
    ClusterUnavailableError,
)


def api_error(exc: Any, kubeconfig: str) -> ClusterError:
    """The platform's error for the client's `ApiException` (not found, exists, 401, 403, the rest)."""
    message = exc.reason
    with contextlib.suppress(TypeError, ValueError, AttributeError):
        message = json.loads(exc.body).get("message", message)
    if exc.status == 404:
        return ClusterNotFoundError(message)
    if exc.status == 409:
        return ClusterExistsError(message)
    if exc.status == 401:
        return ClusterUnavailableError(
            f"the Kubernetes API rejected the credentials of {kubeconfig} (401 Unauthorized); "
            "log in again or refresh the token it holds"
        )
    if exc.status == 403:  # the API's message names the user, the verb and the resource
        return ClusterForbiddenError(
            f"forbidden: {message}; ask your platform team for that permission (deploy/platform holds the Roles)"
        )
    return ClusterError(f"Kubernetes API refused the request ({exc.status}): {message}")


def load_config(kubernetes: Any, kubeconfig: str | None) -> str:
    """Load the client's configuration; what was loaded, for messages.

    Raises:
        ClusterUnavailableError: no kubeconfig, an unreadable or broken one, or an unknown context.
    """
    if kubeconfig is None and _in_cluster():
        kubernetes.config.load_incluster_config()
        return "the in-cluster service account"
    # The client reads $KUBECONFIG once, at import; read it now so a changed value counts.
    path = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    first = path.split(os.pathsep)[0]
    fix = "point KUBECONFIG at your cluster's kubeconfig, or use the local backend (--backend local)"
    if not os.path.exists(first):
        raise ClusterUnavailableError(f"kubeconfig {first} does not exist; {fix}")
    import yaml

    try:
        kubernetes.config.load_kube_config(config_file=path)
    except OSError as exc:
        raise ClusterUnavailableError(f"kubeconfig {first} cannot be read ({exc.strerror}); {fix}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "a YAML error"
        raise ClusterUnavailableError(f"kubeconfig {first} is not valid YAML ({problem}{where}); {fix}") from None
    except (kubernetes.config.ConfigException, ValueError, TypeError, AttributeError) as exc:
        reason = " ".join(str(exc).split())  # one line
        raise ClusterUnavailableError(
            f"kubeconfig {first} is not usable: {reason}; pick a context that exists (kubectl config get-contexts)"
        ) from None
    return f"kubeconfig {first}"


def _in_cluster() -> bool:
    return "KUBERNETES_SERVICE_HOST" in os.environ
