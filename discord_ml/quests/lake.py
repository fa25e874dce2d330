"""The quests data lake: where each dataset lives under the data root. Raw data is read-only; outputs
are published by the store's atomic rules (`discord_ml.storage`).

The root is a local path by default (`DML_DATA_ROOT`, else `$DML_HOME/data`) and may be any URL
pyarrow understands (`s3://bucket/prefix`, `gs://…`, `file:///…`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import ClassVar

from discord_ml.settings import get_settings
from discord_ml.storage import StorageError, Store

DATE_FORMAT = "%Y-%m-%d"


class LakeError(StorageError):
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
class Lake(Store):
    """Paths of every dataset under one root."""

    error: ClassVar[type[StorageError]] = LakeError

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

    # --- reading ---------------------------------------------------------------------------------

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
