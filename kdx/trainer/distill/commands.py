"""``kdx distill RUN --profile PROFILE [--student AGENT=WxW ...] [--view AGENT=OPS ...] [--views-file F] [--steps N] [--resume]``.

Every other option is generated from ``DistillConfig``'s fields (its one-line description is the
help), so the config and the CLI never drift apart. ``--profile`` names the *device profile*
that sizes the students; the torch device is ``--torch-device``. A new distillation's values come
from the options given, then the recipe of the teacher's env (``kdx/trainer/recipes/``), then the
defaults. Without ``--view``/``--views-file``, a device profile that names a default view
(``[view] default``, its sensor suite) gives it to every student (the ``*`` entry).
"""

from __future__ import annotations

import inspect
from dataclasses import fields
from typing import Optional

import typer

from kdx.errors import KdxError
from kdx.trainer.common.config_options import config_parameters

# Fields with a dedicated option name; fields set by the fixed options are not generated.
_RENAMED = {"total_steps": "steps"}
_FIXED = ("profile", "students", "views")


def _config_parameters() -> list[inspect.Parameter]:
    from kdx.trainer.distill.config import DistillConfig

    return config_parameters(DistillConfig, _RENAMED, skip=_FIXED)


def profile_default_views(profile: str, env: str) -> tuple[str, ...]:
    """The views entry of ``profile``'s default view (``("*=OPS",)``), or ``()`` when it names none;
    checked against ``env``'s observation layouts, with a KdxError naming the profile."""
    from kdx.devices.registry import get_profile

    found = get_profile(profile)
    if not found.default_view:
        return ()
    from kdx.envs.registry import make
    from kdx.envs.view_spec import EVERY_AGENT
    from kdx.trainer.distill.views import StudentViews

    entries = (f"{EVERY_AGENT}={' '.join(found.default_view)}",)
    probe = make(env, num_envs=1)
    try:
        StudentViews.resolve(entries, probe)
    except KdxError as exc:
        raise KdxError(f"device profile {found.name!r} names the default view {list(found.default_view)}, which does "
                       f"not fit {env} ({exc}); give the students a view with --view/--views-file, or change the "
                       "profile's [view] default") from None
    finally:
        probe.close()
    return entries


def distill_command(run: str, profile: str | None, student: list[str] | None, view: list[str] | None,
                    views_file: str | None, resume: bool, quiet: bool, **options) -> None:
    """Distil the teacher of RUN into one small student per agent, sized for a device profile (stage 2).

    A new distillation takes each option given, else the recipe of the teacher's env
    (kdx/trainer/recipes/), else the default shown.
    """
    from rich.console import Console

    from kdx.trainer.distill.config import DistillConfig
    from kdx.trainer.distill.loop import distill

    console = Console()
    given = {k: v for k, v in options.items() if v is not None}
    views = tuple(view or ())
    if views_file:
        from kdx.trainer.distill.views import view_entries_from_toml

        views = view_entries_from_toml(views_file) + views  # duplicates are refused when resolved
    if resume:
        from kdx.trainer.distill.store import read_students_config, students_profile

        saved = read_students_config(run)
        same_profile = profile is None or profile == students_profile(saved)["name"]
        same_students = not student or tuple(student) == tuple(saved["distill"].get("students", ()))
        same_views = not views or views == tuple(saved["distill"].get("views", ()))
        extra = (sorted(set(given) - {"steps", "minutes"}) + ([] if same_profile else ["profile"])
                 + ([] if same_students else ["student"]) + ([] if same_views else ["view"]))
        if extra:
            raise KdxError(f"--resume continues with the saved config; only --steps and --minutes may change (got {extra}). "
                           "Start over (delete RUN/students) to change other settings.")
        last = distill(run, resume=True, total_steps=given.get("steps"), minutes=given.get("minutes"),
                       show_progress=not quiet, console=console)
    else:
        if not profile:
            from kdx.devices.registry import profile_names

            raise KdxError(f"say which device the students are for: --profile PROFILE (one of {', '.join(profile_names())}, "
                           "or a path to a profile .toml)")
        from kdx.layout import RunLayout
        from kdx.trainer.common.recipes import config_with_recipe
        from kdx.trainer.teacher.store import read_teacher_config

        kwargs = {f.name: given[_RENAMED.get(f.name, f.name)] for f in fields(DistillConfig)
                  if _RENAMED.get(f.name, f.name) in given and f.name not in _FIXED}
        env = read_teacher_config(RunLayout(run).teacher)[0].env
        if not views:
            views = profile_default_views(profile, env)
            if views:
                console.print(f"views: the default view of device profile {profile}: {views[0]}", markup=False,
                              highlight=False)
        config, recipe = config_with_recipe(DistillConfig, env, kwargs, profile=profile, students=tuple(student or ()),
                                            views=views)
        console.print(recipe.describe(), markup=False, highlight=False)
        last = distill(run, config, show_progress=not quiet, console=console, recipe=recipe)
    from kdx.trainer.common.update_loop import (  # torch is loaded by now
        signal_exit_code,
        stopped_by_signal_message,
    )

    if signal_exit_code(last):
        console.print(stopped_by_signal_message(last, f"`kdx distill {run} --resume`"))
        raise typer.Exit(signal_exit_code(last))  # as a process ended by the signal
    elif last:
        agree = last.get("teacher_agreement")
        console.print(f"students saved in {run}/students (updates {last['update']}, env steps {last['env_steps']:,}, "
                      f"teacher agreement {agree if agree is None else round(agree, 3)}). Next: `kdx evaluate {run}`")
    else:
        console.print(f"nothing to do: {run}/students already finished its steps (raise --steps to continue)")


def register(app: typer.Typer) -> None:
    def distill_cmd(**kwargs) -> None:
        distill_command(**kwargs)

    base = [
        inspect.Parameter("run", inspect.Parameter.KEYWORD_ONLY, annotation=str,
                          default=typer.Argument(..., help="Run folder holding a trained teacher.")),
        inspect.Parameter("profile", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],  # noqa: UP045
                          default=typer.Option(None, "--profile", help="Device profile that sizes the students (`kdx devices list`).")),
        inspect.Parameter("student", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[list[str]],  # noqa: UP045
                          default=typer.Option(None, "--student", help="Override one agent's student: AGENT=W or AGENT=W1xW2 (repeatable).")),
        inspect.Parameter("view", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[list[str]],  # noqa: UP045
                          default=typer.Option(None, "--view", help="One agent's or group's student view: AGENT_OR_GROUP=OPS, "
                                               "e.g. 'marine=sight:4 noise:0.05' or 'agent_0=-comm.*'; '*=OPS' for every agent "
                                               "(repeatable). Default: the device profile's [view] default, if it names one.")),
        inspect.Parameter("views_file", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],  # noqa: UP045
                          default=typer.Option(None, "--views-file", help="TOML file whose [views] table gives views "
                                               "(marine = [\"sight:4\"]); --view entries add to it.")),
        inspect.Parameter("resume", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                          default=typer.Option(False, "--resume", help="Continue RUN's distillation from its last checkpoint.")),
        inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                          default=typer.Option(False, "--quiet", help="No progress bar or sizing table.")),
    ]
    params = base + _config_parameters()
    distill_cmd.__signature__ = inspect.Signature(params)
    distill_cmd.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
    distill_cmd.__doc__ = distill_command.__doc__
    app.command("distill")(distill_cmd)
