"""Typed config dataclasses and the CLI options generated from them: one option per field, its
one-line description (``field.metadata["help"]``) as help, so a config and its command never drift
apart. Shared by ``TeacherConfig`` and ``DistillConfig``."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, Field, field, fields
from typing import Any, Optional

import typer


def config_field(default: Any, help: str) -> Any:
    """A dataclass field with its one-line description (shown by the command's ``--help``)."""
    return field(default=default, metadata={"help": help})


def field_help(config_cls: type) -> dict[str, str]:
    """``{field name: one-line description}`` for every field of ``config_cls``."""
    return {f.name: f.metadata["help"] for f in fields(config_cls)}


def field_defaults(config_cls: type) -> dict[str, Any]:
    """``{field name: default}`` for every field of ``config_cls`` that has one."""
    return {f.name: f.default for f in fields(config_cls) if f.default is not MISSING}


def cli_order(config_cls: type) -> list[Field]:
    """The fields of ``config_cls`` as ``--help`` lists them: the ones the class itself declares
    first (its own knobs, in its order), then those it inherits unchanged (shared loop settings)."""
    own = list(vars(config_cls).get("__annotations__", {}))
    by_name = {f.name: f for f in fields(config_cls)}
    return [by_name[n] for n in own if n in by_name] + [f for f in by_name.values() if f.name not in own]


def config_parameters(config_cls: type, renamed: Mapping[str, str] | None = None,
                      skip: Iterable[str] = ()) -> list[inspect.Parameter]:
    """Keyword-only parameters (typer options defaulting to None = "use the config's default")
    for every field of ``config_cls`` except ``skip``; ``renamed`` maps field -> option name."""
    renamed = dict(renamed or {})
    skip = set(skip)
    hints = typing.get_type_hints(config_cls)
    params = []
    for f in cli_order(config_cls):
        if f.name in skip:
            continue
        name = renamed.get(f.name, f.name)
        flag = "--" + name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        decls = [f"{flag}/--no-{name.replace('_', '-')}"] if hints[f.name] is bool else [flag]
        option = typer.Option(None, *decls, help=f"{f.metadata['help']} (default: {default})", show_default=False)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                        annotation=Optional[hints[f.name]]))  # noqa: UP045 (typer needs Optional)
    return params


def renamed_keys(data: Mapping[str, Any], renamed: Mapping[str, str]) -> dict[str, Any]:
    """``data`` (a saved config) with each old key of ``renamed`` under its new name, so that runs
    written before a field was renamed still load; a key given both ways keeps the new one."""
    out = dict(data)
    for old, new in renamed.items():
        if old in out:
            value = out.pop(old)
            out.setdefault(new, value)
    return out
