"""CLI options generated from a config dataclass: one option per field, its one-line
description (``field.metadata["help"]``) as help, so a config and its command never drift apart."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, fields
from typing import Optional

import typer


def config_parameters(config_cls: type, renamed: Mapping[str, str] | None = None,
                      skip: Iterable[str] = ()) -> list[inspect.Parameter]:
    """Keyword-only parameters (typer options defaulting to None = "use the config's default")
    for every field of ``config_cls`` except ``skip``; ``renamed`` maps field -> option name."""
    renamed = dict(renamed or {})
    skip = set(skip)
    hints = typing.get_type_hints(config_cls)
    params = []
    for f in fields(config_cls):
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
