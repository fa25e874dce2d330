"""A small model registry in the data lake: numbered, immutable versions and a production pointer.

    registry/<model_name>/v0001/{model card.json, artifact files}
    registry/production.json     {"current": {...}, "history": [...]}

A version directory is published atomically and never replaced: registering picks the next
free number and, if another writer took it first, the next one.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from discord_ml.quests.lake import Lake, LakeError
from discord_ml.settings import get_settings

CARD = "card.json"


class RegistryError(LakeError):
    """A model version is missing or cannot be registered."""


@dataclass(frozen=True)
class ModelVersion:
    """One registered model: where it lives and its card (config, metrics, data window, code)."""

    model_name: str
    version: int
    path: str
    card: dict[str, Any]

    @property
    def ref(self) -> str:
        """`dlrm/v0003`: how runs, metadata and the CLI name a version."""
        return f"{self.model_name}/v{self.version:04d}"


def git_sha() -> str:
    """The code's commit (DML_GIT_SHA in images, else `git rev-parse`), `unknown` outside a checkout."""
    if sha := get_settings().git_sha:
        return sha
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


class ModelRegistry:
    """Versions of every model under `<data root>/registry`."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake

    def _model_dir(self, model_name: str) -> str:
        return f"{self.lake.registry_dir()}/{model_name}"

    def versions(self, model_name: str) -> list[int]:
        """The version numbers registered for `model_name`, oldest first."""
        from pyarrow import fs as pafs

        selector = pafs.FileSelector(self._model_dir(model_name), allow_not_found=True)
        numbers = []
        for info in self.lake.filesystem.get_file_info(selector):
            name = info.path.rsplit("/", 1)[-1]
            is_version = info.type == pafs.FileType.Directory and name.startswith("v") and name[1:].isdigit()
            if is_version and self.lake.complete(info.path):
                numbers.append(int(name[1:]))
        return sorted(numbers)

    def get(self, ref: str) -> ModelVersion:
        """The version named `model/vNNNN`."""
        model_name, _, number = ref.partition("/v")
        if not number.isdigit():
            raise RegistryError(f"model version {ref!r} is not of the form <model>/v<number>, e.g. dlrm/v0001")
        path = f"{self._model_dir(model_name)}/v{int(number):04d}"
        if not self.lake.complete(path):
            known = ", ".join(f"{model_name}/v{v:04d}" for v in self.versions(model_name)) or "none"
            raise RegistryError(f"model version {ref} is not registered; registered {model_name} versions: {known}")
        return ModelVersion(model_name, int(number), path, self.lake.read_json(f"{path}/{CARD}"))

    def latest(self, model_name: str) -> ModelVersion | None:
        """The newest version of `name`, or None."""
        versions = self.versions(model_name)
        return self.get(f"{model_name}/v{versions[-1]:04d}") if versions else None

    def find(self, model_name: str, **card_fields: Any) -> ModelVersion | None:
        """The newest version whose card has all of `card_fields`."""
        for number in reversed(self.versions(model_name)):
            version = self.get(f"{model_name}/v{number:04d}")
            if all(version.card.get(k) == v for k, v in card_fields.items()):
                return version
        return None

    def register(self, model_name: str, files: dict[str, bytes], card: dict[str, Any]) -> ModelVersion:
        """Publish `files` and the card as the next version; earlier versions are never touched."""
        for _ in range(20):
            number = (self.versions(model_name) or [0])[-1] + 1
            path = f"{self._model_dir(model_name)}/v{number:04d}"
            full_card = {
                **card,
                "model_name": model_name,
                "version": number,
                "registered_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "git_sha": card.get("git_sha") or git_sha(),
            }
            try:
                with self.lake.publish(path, replace=False) as staging:
                    for name, data in {**files, CARD: _json_bytes(full_card)}.items():
                        with self.lake.filesystem.open_output_stream(f"{staging}/{name}") as out:
                            out.write(data)
            except (LakeError, OSError):
                continue  # another writer took this number
            return ModelVersion(model_name, number, path, full_card)
        raise RegistryError(f"could not register a new {model_name} version under {self._model_dir(model_name)}")

    # --- production pointer -------------------------------------------------------------------

    def _production_file(self) -> str:
        return f"{self.lake.registry_dir()}/production.json"

    def production(self) -> ModelVersion | None:
        """The version promoted to production, or None before the first promotion."""
        path = self._production_file()
        if not self.lake.exists(path):
            return None
        current = self.lake.read_json(path).get("current")
        return self.get(current["ref"]) if current else None

    def promote(self, version: ModelVersion, *, reason: str, run_id: str | None = None) -> dict[str, Any]:
        """Make `version` the production model; the pointer file keeps the history."""
        path = self._production_file()
        state = self.lake.read_json(path) if self.lake.exists(path) else {"history": []}
        entry = {
            "ref": version.ref,
            "reason": reason,
            "run_id": run_id,
            "promoted_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        state = {"current": entry, "history": [*state.get("history", []), entry]}
        self.lake.write_json_atomic(path, state)
        return entry


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, indent=2, sort_keys=True, default=str).encode()
