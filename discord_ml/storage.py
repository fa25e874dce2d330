"""Where the platform keeps files, and its two write rules: what exists is never modified in place,
and outputs are published atomically (written under a temporary name, moved into place, then marked
complete).

A root is a local path or any URL pyarrow understands (`s3://bucket/prefix`, `gs://…`, `file:///…`).
On object stores a move is a copy, so readers trust a directory only once its `_SUCCESS` marker
exists. The quests data lake and the job-log archive are both stores.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import pyarrow as pa
    from pyarrow import fs as pafs

SUCCESS = "_SUCCESS"


class StorageError(Exception):
    """The root is unusable, or a file or dataset is missing or may not be replaced."""


@dataclass(frozen=True)
class Store:
    """Files under one root (a local path or a pyarrow URL), read and written by the rules above."""

    error: ClassVar[type[StorageError]] = StorageError  # what a refused write raises

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

    def read_table(self, files: Sequence[str], columns: Sequence[str] | None = None) -> pa.Table:
        """Parquet `files` as one table (only `columns`, if given)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        cols = list(columns) if columns is not None else None
        return pa.concat_tables(pq.read_table(f, filesystem=self.filesystem, columns=cols) for f in files)

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
                    raise self.error(f"{directory} already exists and may not be replaced")
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
