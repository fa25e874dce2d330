"""The data lake's layout and its two write rules: raw data is read-only, outputs are published
atomically (written under a temporary name, moved into place, then marked complete).

The root is a local path by default (`DML_DATA_ROOT`, else `$DML_HOME/data`) and may be any URL
pyarrow understands (`s3://bucket/prefix`, `gs://…`, `file:///…`). On object stores a move is a
copy, so readers trust a directory only once its `_SUCCESS` marker exists.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from discord_ml.settings import get_settings

if TYPE_CHECKING:
    from pyarrow import fs as pafs

SUCCESS = "_SUCCESS"
DATE_FORMAT = "%Y-%m-%d"


class LakeError(Exception):
    """The data root is unusable or a dataset is missing."""


def default_root() -> str:
    """`DML_DATA_ROOT`, else `$DML_HOME/data`."""
    return get_settings().data_root


def parse_date(value: str, *, field: str = "date") -> dt.date:
    """`YYYY-MM-DD` → date, with an error that names the field."""
    try:
        return dt.datetime.strptime(value, DATE_FORMAT).date()
    except ValueError:
        raise LakeError(f"{field} {value!r} is not a date; use YYYY-MM-DD, e.g. 2026-11-20") from None


def window_days(end: dt.date, window: int) -> list[dt.date]:
    """The `window` days ending at `end`, oldest first."""
    return [end - dt.timedelta(days=i) for i in range(window - 1, -1, -1)]


def date_str(day: dt.date) -> str:
    return day.strftime(DATE_FORMAT)


@dataclass(frozen=True)
class Lake:
    """Paths of every dataset under one root (a local path or a pyarrow/fsspec URL)."""

    root: str

    @property
    def filesystem(self) -> pafs.FileSystem:
        return self._resolve()[0]

    @property
    def base(self) -> str:
        """The root as a path on `filesystem`."""
        return self._resolve()[1]

    def _resolve(self) -> tuple[pafs.FileSystem, str]:
        from pyarrow import fs as pafs

        if "://" in self.root:
            filesystem, path = pafs.FileSystem.from_uri(self.root)
            return filesystem, path.rstrip("/")
        return pafs.LocalFileSystem(), os.path.abspath(self.root)

    def path(self, *parts: str) -> str:
        return "/".join([self.base, *parts])

    # --- layout -----------------------------------------------------------------------------

    def world_manifest(self) -> str:
        return self.path("landing", "_world.json")

    def impressions_dir(self, day: dt.date) -> str:
        return self.path("landing", "impressions", f"date={date_str(day)}")

    def requests_dir(self, day: dt.date) -> str:
        return self.path("landing", "requests", f"date={date_str(day)}")

    def truth_dir(self, kind: str, day: dt.date) -> str:
        """Eval-only true participation probabilities (`impressions` or `requests`); never a feature."""
        return self.path("eval_truth", kind, f"date={date_str(day)}")

    def features_dir(self, day: dt.date) -> str:
        return self.path("features", f"date={date_str(day)}")

    def quarantine_dir(self, day: dt.date) -> str:
        return self.path("quarantine", f"date={date_str(day)}")

    def evaluation_dir(self, day: dt.date) -> str:
        return self.path("evaluations", f"date={date_str(day)}")

    def recommendations_dir(self, day: dt.date) -> str:
        return self.path("recommendations", f"date={date_str(day)}")

    def registry_dir(self) -> str:
        return self.path("registry")

    def run_storage(self, run_id: str) -> str:
        """Where a run keeps checkpoints: a path, or a URL under a URL root (the form Ray Train wants)."""
        if "://" in self.root:
            return f"{self.root.rstrip('/')}/runs/{run_id}"
        return self.path("runs", run_id)

    # --- reading ------------------------------------------------------------------------------

    def exists(self, path: str) -> bool:
        from pyarrow import fs as pafs

        return self.filesystem.get_file_info(path).type != pafs.FileType.NotFound

    def complete(self, directory: str) -> bool:
        """True when `directory` was published (its `_SUCCESS` marker exists)."""
        return self.exists(f"{directory}/{SUCCESS}")

    def files(self, directory: str, suffix: str = ".parquet") -> list[str]:
        """Data files directly under `directory`, sorted; markers and hidden files excluded."""
        from pyarrow import fs as pafs

        infos = self.filesystem.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
        names = [i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(suffix)]
        return sorted(n for n in names if not n.rsplit("/", 1)[-1].startswith(("_", ".")))

    def landed_days(self) -> list[dt.date]:
        """Days whose impressions carry the upstream completion marker, oldest first."""
        from pyarrow import fs as pafs

        selector = pafs.FileSelector(self.path("landing", "impressions"), allow_not_found=True)
        days = []
        for info in self.filesystem.get_file_info(selector):
            name = info.path.rsplit("/", 1)[-1]
            if info.type == pafs.FileType.Directory and name.startswith("date="):
                day = parse_date(name.removeprefix("date="))
                if self.complete(info.path):
                    days.append(day)
        return sorted(days)

    def missing_features(self, end: dt.date, window: int) -> list[dt.date]:
        """Days of the `window` days ending at `end` that have no published features (empty: ready)."""
        return [d for d in window_days(end, window) if not self.complete(self.features_dir(d))]

    def read_json(self, path: str) -> Any:
        with self.filesystem.open_input_stream(path) as stream:
            return json.loads(stream.read().decode())

    # --- writing ------------------------------------------------------------------------------

    def write_bytes_atomic(self, path: str, data: bytes) -> None:
        """Write a file under a temporary name, then move it over `path`."""
        filesystem = self.filesystem
        parent = path.rsplit("/", 1)[0]
        filesystem.create_dir(parent, recursive=True)
        tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
        with filesystem.open_output_stream(tmp) as out:
            out.write(data)
        filesystem.move(tmp, path)

    def write_json_atomic(self, path: str, value: Any) -> None:
        self.write_bytes_atomic(path, json.dumps(value, indent=2, sort_keys=True, default=str).encode())

    @contextmanager
    def publish(self, directory: str, *, replace: bool = True) -> Iterator[str]:
        """Yield a staging directory; on success it replaces `directory` whole and is marked complete.

        Readers never see a half-written dataset: the staging directory sits beside the target
        under a hidden name and is removed if the block raises.
        """
        filesystem = self.filesystem
        parent, name = directory.rsplit("/", 1)
        staging = f"{parent}/.staging-{name}-{uuid.uuid4().hex[:8]}"
        filesystem.create_dir(staging, recursive=True)
        try:
            yield staging
            if self.exists(directory):
                if not replace:
                    raise LakeError(f"{directory} already exists and may not be replaced")
                # Unmark first so that a reader racing the swap sees "incomplete", never a mix.
                if self.complete(directory):
                    filesystem.delete_file(f"{directory}/{SUCCESS}")
                filesystem.delete_dir(directory)
            filesystem.move(staging, directory)
            with filesystem.open_output_stream(f"{directory}/{SUCCESS}") as out:
                out.write(b"")
        finally:
            if self.exists(staging):
                filesystem.delete_dir(staging)
