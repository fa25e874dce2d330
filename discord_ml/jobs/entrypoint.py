"""Typed Ray job entrypoints: one dataclass per job is both its command-line parser and the builder of
its command line, so the asset that submits a job and the job that parses it cannot disagree on a
flag, a type or a default.

A field `batch_size: int = 2048` is the flag `--batch-size`; a field without a default is required;
`list[str]` repeats its flag; `None` is left out. The command is quoted with `shlex.join`, so a path
with spaces or quotes reaches the job as one argument.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import types
import typing
from collections.abc import Sequence
from typing import Any, ClassVar, Self


def arg(*, default: Any = dataclasses.MISSING, help: str, choices: Sequence[str] | None = None) -> Any:
    """A field with its `--help` text (and, for a closed set, its choices)."""
    metadata = {"help": help, "choices": tuple(choices) if choices else None}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@typing.dataclass_transform(frozen_default=True, kw_only_default=True, field_specifiers=(arg,))
class Entrypoint:
    """Base of a job's arguments; subclasses (frozen, keyword-only dataclasses) set `MODULE` (run as
    `python -m MODULE`) and their fields, each made with `arg`."""

    MODULE: ClassVar[str]
    __dataclass_fields__: ClassVar[dict[str, Any]]  # set on each subclass by `__init_subclass__`

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dataclasses.dataclass(frozen=True, kw_only=True)(cls)

    def argv(self) -> list[str]:
        """The job's arguments as a command line (without the program)."""
        argv: list[str] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            flag = "--" + f.name.replace("_", "-")
            if value is None:
                continue
            # `--flag=value`: a value that starts with "-" is still a value
            argv += [f"{flag}={item}" for item in (value if isinstance(value, list) else [value])]
        return argv

    def command(self, python: str = "python") -> str:
        """The shell command that runs the job: `python -m MODULE --flag value ...`, quoted."""
        return shlex.join([python, "-m", self.MODULE, *self.argv()])

    @classmethod
    def parser(cls) -> argparse.ArgumentParser:
        """The job's parser, built from the fields."""
        module = sys.modules.get(cls.MODULE)
        parser = argparse.ArgumentParser(prog=f"python -m {cls.MODULE}",
                                         description=module.__doc__ if module else cls.__doc__)  # fmt: skip
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind, repeated = _scalar(hints[f.name])
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            options: dict[str, Any] = {"type": kind, "help": f.metadata.get("help"), "dest": f.name}
            if f.metadata.get("choices"):
                options["choices"] = f.metadata["choices"]
            if repeated:
                options["action"] = "append"
            if required:
                options["required"] = True
            else:
                options["default"] = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            parser.add_argument("--" + f.name.replace("_", "-"), **options)
        return parser

    @classmethod
    def parse(cls, argv: Sequence[str] | None = None) -> Self:
        """The arguments of `argv` (default: this process's), or exit 2 naming the bad flag."""
        return cls(**vars(cls.parser().parse_args(argv)))


def _scalar(hint: Any) -> tuple[type, bool]:
    """(the type argparse converts each value with, whether the flag repeats) of a field's annotation."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) is list:
        return typing.get_args(hint)[0], True
    return hint, False
