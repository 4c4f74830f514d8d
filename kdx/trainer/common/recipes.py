"""Recipes: per-env teacher and distillation settings, kept as data.

One TOML file per env family ships in ``kdx/trainer/recipes/<family>.toml``. Under the family's
table, a stage section (``[skirmish.teacher]``, ``[skirmish.distill]``) is the family's recipe and
an env section (``[skirmish."3m".teacher]``, named by the env without its ``family/`` prefix) is
that env's. A stage names the config it targets by the config's ``KIND``.

Selection, per stage: the env's own section, else its family's, else none (the dataclass
defaults). A section is the whole recipe: an env's section does not inherit the family's.
Precedence of a value: command-line flag > recipe > dataclass default. Every key must be a field
of the targeted config with a value of its type; anything else is a ``KdxError`` naming the file,
the section, the key and the valid fields.
"""

from __future__ import annotations

import re
import sys
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from importlib import resources
from typing import Any

from kdx.errors import KdxError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

# The stages a recipe may target: the ``KIND`` of ``TeacherConfig`` and ``DistillConfig``
# (tests/trainer/test_recipes.py checks that the two agree).
RECIPE_STAGES = ("teacher", "distill")
# Fields that say which run this is rather than how to train it: a recipe may not set them.
NOT_IN_RECIPES = ("env", "profile", "students")
RECIPES_FOLDER = "kdx/trainer/recipes"


@dataclass(frozen=True)
class Recipe:
    """The recipe a stage resolved for an env: ``name`` (the env, its family, or ``"defaults"``),
    ``source`` (file and section) and ``values`` (``{field: value}``, already of the field's type)."""

    name: str
    source: str
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RecipeUse:
    """A recipe as a command used it: the ``values`` it set and the ones a flag ``overridden``
    (``{field: recipe's value}``). Recorded in the run's config.json and printed at the start."""

    recipe: Recipe
    values: dict[str, Any]
    overridden: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        plain = {k: list(v) if isinstance(v, tuple) else v for k, v in self.values.items()}
        return {"name": self.recipe.name, "source": self.recipe.source, "values": plain,
                "overridden": {k: list(v) if isinstance(v, tuple) else v for k, v in self.overridden.items()}}

    def describe(self) -> str:
        """One line for the start of ``kdx train`` / ``kdx distill``."""
        if not self.recipe.values:
            return f"recipe: none for this env ({self.recipe.source})"
        line = f"recipe {self.recipe.name} ({self.recipe.source}): " + (
            " ".join(f"{k}={v}" for k, v in self.values.items()) or "every value overridden")
        if self.overridden:
            line += f"; flags override {', '.join(self.overridden)}"
        return line


DEFAULTS_SOURCE = "dataclass defaults"


# ------------------------------------------------------------------ the shipped files
def recipe_files() -> dict[str, str]:
    """``{family: TOML text}`` of every recipe file shipped with kdx."""
    folder = resources.files("kdx.trainer").joinpath("recipes")
    entries = sorted((e for e in folder.iterdir() if e.name.endswith(".toml")), key=lambda e: e.name)
    return {e.name[: -len(".toml")]: e.read_text(encoding="utf-8") for e in entries}


def _section_label(family: str, env_key: str | None, stage: str) -> str:
    def key(k: str) -> str:
        return k if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", k) else f'"{k}"'

    return "[" + ".".join(key(k) for k in (family, *([env_key] if env_key else []), stage)) + "]"


def _typed(config_cls: type, key: str, value: Any, where: str) -> Any:
    """``value`` as field ``key``'s type: ints are accepted for float fields, nothing else converts."""
    kind = typing.get_type_hints(config_cls)[key]
    ok = {bool: isinstance(value, bool), int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, (int, float)) and not isinstance(value, bool), str: isinstance(value, str),
          tuple[str, ...]: isinstance(value, list) and all(isinstance(v, str) for v in value)}.get(kind, False)
    if not ok:
        name = getattr(kind, "__name__", None) if kind is not tuple[str, ...] else "list of strings"
        raise KdxError(f"{where}: {key} = {value!r} is not a {name or kind}; fix the value in the recipe file")
    return float(value) if kind is float else tuple(value) if kind is tuple[str, ...] else value


def _stage_values(config_cls: type, table: Any, where: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise KdxError(f"{where} must be a table of {config_cls.__name__} fields")
    valid = [f.name for f in fields(config_cls) if f.name not in NOT_IN_RECIPES]
    out = {}
    for key, value in table.items():
        if key not in valid:
            why = "says which run this is, not how to train it" if key in NOT_IN_RECIPES else "is not a field"
            raise KdxError(f"{where}: {key!r} {why} of {config_cls.__name__}; valid keys: {', '.join(valid)}")
        out[key] = _typed(config_cls, key, value, where)
    return out


def parse_recipe_file(family: str, text: str, config_cls: type) -> dict[str | None, Recipe]:
    """The recipes of ``config_cls.KIND`` in one family's file: ``{None: family's, env key: env's}``.

    Checks the whole file (every stage name, env name and, for this stage, every key and value);
    ``KdxError`` naming the file, the section and the fix.
    """
    from kdx.envs.registry import available

    path = f"{RECIPES_FOLDER}/{family}.toml"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise KdxError(f"{path} is not valid TOML ({exc})") from None
    if set(data) != {family}:
        raise KdxError(f"{path} must hold one table, [{family}...], named after the file (found {sorted(data)})")
    envs = sorted(n.split("/", 1)[1] for n, e in available().items() if e.family == family and "/" in n)
    recipes: dict[str | None, Recipe] = {}
    for key, table in data[family].items():
        env_key = None if key in RECIPE_STAGES else key
        stages = {key: table} if env_key is None else table
        if env_key is not None and (env_key not in envs or not isinstance(table, dict)):
            raise KdxError(f"{path}: [{family}.{key}] is neither a stage ({', '.join(RECIPE_STAGES)}) nor a "
                           f"{family} env; {family} envs: {', '.join(envs) or '(none registered)'}")
        for stage, values in stages.items():
            where = f"{path} {_section_label(family, env_key, stage)}"
            if stage not in RECIPE_STAGES:
                raise KdxError(f"{where}: unknown stage {stage!r}; a recipe targets one of {', '.join(RECIPE_STAGES)}")
            if stage == config_cls.KIND:
                name = family if env_key is None else f"{family}/{env_key}"
                recipes[env_key] = Recipe(name, where, _stage_values(config_cls, values, where))
    return recipes


# ------------------------------------------------------------------ selection and use
def _family_and_key(env: str) -> tuple[str, str] | None:
    from kdx.envs.registry import available, prefixes

    entry = available().get(env)
    family = entry.family if entry else next((e.family for p, e in prefixes().items() if env.startswith(p)), None)
    if family is None:
        return None
    return family, env[len(family) + 1:] if env.startswith(family + "/") else env


def recipe_for(env: str, config_cls: type, files: Mapping[str, str] | None = None) -> Recipe:
    """The recipe of ``config_cls.KIND`` for ``env``: the env's own, else its family's, else none.
    ``files`` (``{family: TOML text}``) replaces the shipped files (tests)."""
    found = _family_and_key(env)
    text = (recipe_files() if files is None else files).get(found[0]) if found else None
    if text is None:
        return Recipe("defaults", DEFAULTS_SOURCE)
    family, env_key = found
    recipes = parse_recipe_file(family, text, config_cls)
    return recipes.get(env_key) or recipes.get(None) or Recipe("defaults", DEFAULTS_SOURCE)


def config_with_recipe(config_cls: type, env: str, given: dict[str, Any], **fixed: Any) -> tuple[Any, RecipeUse]:
    """``config_cls`` for ``env`` from the dataclass defaults, then the env's recipe, then ``given``
    (the options given on the command line, by field name), then ``fixed``; and how the recipe was used."""
    recipe = recipe_for(env, config_cls)
    use = RecipeUse(recipe, {k: v for k, v in recipe.values.items() if k not in given},
                    {k: v for k, v in recipe.values.items() if k in given})
    try:
        config = config_cls(**{**recipe.values, **given, **fixed})
    except TypeError as exc:
        raise KdxError(f"bad {config_cls.KIND} option: {exc}") from None
    return config, use
