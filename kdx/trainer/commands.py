"""``kdx evaluate``: the command that spans both stages (teacher vs students)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add ``evaluate`` to the ``kdx`` app."""

    @app.command("evaluate")
    def evaluate(
        run: str = typer.Argument(..., help="Run folder holding a trained teacher."),
        episodes: int = typer.Option(100, "--episodes", help="Episodes per policy."),
        seed: int = typer.Option(10_000, "--seed", help="First evaluation seed (every policy meets the same ones)."),
        torch_device: str = typer.Option("cpu", "--torch-device", help="Torch device (cpu or cuda)."),
    ) -> None:
        """Evaluate the teacher (greedy and sampled), its students if distilled (retention, params and
        MACs per agent) and random/scripted references on the same seeds; writes RUN/eval.json."""
        from kdx.trainer.common.evaluate import print_eval_table
        from kdx.trainer.distill.evaluate import print_students_table
        from kdx.trainer.evaluation import evaluate_run

        result = evaluate_run(run, episodes=episodes, seed=seed, torch_device=torch_device)
        print_eval_table(result)
        print_students_table(result)
