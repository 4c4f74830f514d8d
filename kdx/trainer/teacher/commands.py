"""``kdx train``.

``kdx train``'s options are generated from ``TeacherConfig``'s fields (one option per field, its
one-line description as help), so the config and the CLI never drift apart. A new run's values come
from the options given, then the env's recipe (``kdx/trainer/recipes/``), then the defaults.
"""

from __future__ import annotations

import inspect
import os
import sys
from dataclasses import fields
from typing import Optional

import typer

from kdx.errors import KdxError
from kdx.trainer.common.config_options import config_parameters
from kdx.trainer.common.recipes import RecipeUse, config_with_recipe
from kdx.trainer.teacher.config import TeacherConfig

# Fields with a dedicated, shorter option name.
_RENAMED = {"total_steps": "steps"}


def _config_parameters() -> list[inspect.Parameter]:
    return config_parameters(TeacherConfig, _RENAMED)


def train_command(out: str | None, resume: str | None, quiet: bool, nproc: int = 1, **options) -> None:
    """Train a MAPPO teacher (stage 1): `kdx train --env ENV --steps N --out RUN`, or `--resume RUN`.

    A new run takes each option given, else ENV's recipe (kdx/trainer/recipes/), else the default shown.
    """
    from kdx.trainer.teacher.distributed import world_from_env
    from kdx.trainer.teacher.mappo import train

    given = {k: v for k, v in options.items() if v is not None}
    if nproc != 1:  # data-parallel: the same command in nproc processes under torchrun
        from kdx.trainer.teacher.distributed import launch, option_args

        where = ["--resume", resume] if resume else (["--out", out] if out else [])
        launch(nproc, ["train", *where, *(["--quiet"] if quiet else []), *option_args(given)])
        return
    if resume:
        if out:
            raise KdxError("give either --out (new run) or --resume RUN (continue a run), not both")
        extra = sorted(set(given) - {"steps", "minutes"})
        if extra:
            raise KdxError(
                f"--resume continues the run with its saved config; only --steps and --minutes may change (got {extra}). "
                "Start a new run to change other settings."
            )
        last = train(resume, resume=True, total_steps=given.get("steps"), minutes=given.get("minutes"),
                     show_progress=not quiet)
        run = resume
    else:
        if not out:
            raise KdxError("say where the run goes: --out RUN (or continue one with --resume RUN)")
        config, recipe = teacher_config(given)
        if world_from_env()[0] == 0:  # under torchrun only rank 0 reports
            from rich.console import Console

            Console().print(recipe.describe(), markup=False, highlight=False)
        last = train(out, config, show_progress=not quiet, recipe=recipe)
        run = out
    from kdx.trainer.common.update_loop import signal_exit_code  # torch is loaded by now

    rank, world, _ = world_from_env()
    if rank == 0:  # under torchrun only rank 0 reports
        _report(run, last)
    if world > 1:
        # Every file is written and the process group is closed. Skip the interpreter's teardown:
        # gloo's C++ threads were seen to abort there now and then (torch 2.13, about 1 run in
        # 10), which makes torchrun report the finished run as failed.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(signal_exit_code(last))
    if signal_exit_code(last):  # stopped by a signal: exit as a process ended by it does
        raise typer.Exit(signal_exit_code(last))


def teacher_config(given: dict) -> tuple[TeacherConfig, RecipeUse]:
    """The config of a new ``kdx train`` run from the options given (by option name): each given
    option, else the env's recipe, else the default; and the recipe as used."""
    options = {f.name: given[_RENAMED.get(f.name, f.name)] for f in fields(TeacherConfig)
               if _RENAMED.get(f.name, f.name) in given}
    return config_with_recipe(TeacherConfig, options.get("env", TeacherConfig.env), options)


def _report(run: str, last: dict) -> None:
    from rich.console import Console

    ret = last.get("episode_return")
    if last.get("interrupted"):
        from kdx.trainer.common.update_loop import stopped_by_signal_message

        Console().print(stopped_by_signal_message(last, f"`kdx train --resume {run}`, or `kdx evaluate {run}`"))
        return
    Console().print(
        f"teacher saved in {run}/teacher (updates {last.get('update')}, env steps {last.get('env_steps'):,}, "
        f"last return {ret if ret is None else round(ret, 3)}). Next: `kdx evaluate {run}`"
        if last else f"nothing to do: {run} already finished its steps (raise --steps to continue)"
    )


def register(app: typer.Typer) -> None:
    def train(**kwargs) -> None:
        train_command(**kwargs)

    base = [
        inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],  # noqa: UP045
                          default=typer.Option(None, "--out", help="New run folder (refuses to overwrite a run).")),
        inspect.Parameter("resume", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],  # noqa: UP045
                          default=typer.Option(None, "--resume", help="Continue the run in this folder from its last checkpoint.")),
        inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                          default=typer.Option(False, "--quiet", help="No progress bar.")),
        inspect.Parameter("nproc", inspect.Parameter.KEYWORD_ONLY, annotation=int,
                          default=typer.Option(1, "--nproc", help="Data-parallel processes on this machine "
                                               "(starts torchrun; --num-envs and the batch are per process).")),
    ]
    params = base + _config_parameters()
    train.__signature__ = inspect.Signature(params)
    train.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
    train.__doc__ = train_command.__doc__
    app.command("train")(train)
