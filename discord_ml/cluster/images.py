"""Which images a cluster may run: from an allowed registry (DML_ALLOWED_REGISTRIES), pinned to a
version tag or a digest. Checked when a spec is built and again on every manifest."""

from __future__ import annotations

from collections.abc import Sequence


def image_problem(image: str, allowed_registries: Sequence[str]) -> str | None:
    """Why `image` is not allowed, or None. Untagged images count as `:latest`."""
    if not image:
        return "is empty; name an image such as 'rayproject/ray:2.60.0-py311'"
    if not any(image.startswith(prefix) for prefix in allowed_registries):
        return (
            f"{image!r} is not from an allowed registry ({', '.join(allowed_registries)}); "
            "push it there or extend DML_ALLOWED_REGISTRIES"
        )
    if "@sha256:" in image:
        return None
    name_part = image.rsplit("/", 1)[-1]
    tag = name_part.partition(":")[2]
    if not tag:
        return f"{image!r} has no tag (that means ':latest'); pin a version tag or digest"
    if tag == "latest":
        return f"{image!r} uses ':latest'; pin a version tag or digest"
    return None
