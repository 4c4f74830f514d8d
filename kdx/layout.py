"""``RunLayout``: every path of a run folder, owned in one place. Torch-free (stdlib only).

One run folder holds the whole story of a team, stage by stage::

    RUN/
      teacher/      config.json  weights.safetensors  optimizer.safetensors  metrics.jsonl  tb/
                    checkpoints/NNNNNN/                       (stage 1: kdx train)
      students/     config.json  <agent>.safetensors  sizing.json  metrics.jsonl  tb/
                    checkpoints/NNNNNN/                       (stage 2: kdx distill)
      eval.json                                               (kdx evaluate)
      bundles/<target>/  bundles/<target>.tar.gz              (kdx export)
      devices/      latency JSON from `kdx-runtime bench` on real devices (dropped in by hand)
      report.md  report.html  report_files/                   (kdx report)
      sweep/<job>/  one run folder per sweep job                (kdx sweep)
      .kdx-lock     held by the stage writing into the run (one writer at a time)

Every stage, the demo, the sweep, the report, the tests and the benchmarks ask a ``RunLayout``
for a path instead of joining names by hand, so a file of the run is named exactly once.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from kdx.errors import KdxError
from kdx.fileio import exclusive_lock

CHECKPOINTS = "checkpoints"


@dataclass(frozen=True)
class StageFolder:
    """The files every training stage keeps: config, metrics, TensorBoard, checkpoints."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tb"

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    def exists(self) -> bool:
        """True when the stage has written anything (a new run never overwrites it)."""
        return self.root.is_dir() and any(self.root.iterdir())


@dataclass(frozen=True)
class TeacherFolder(StageFolder):
    """``RUN/teacher/``: stage 1's files."""

    @property
    def weights(self) -> Path:
        """Actor, critic and value normaliser of the newest checkpoint (what later stages load)."""
        return self.root / "weights.safetensors"

    @property
    def optimizer(self) -> Path:
        return self.root / "optimizer.safetensors"

    @property
    def rank_sync(self) -> Path:
        """Where data-parallel ranks leave their parameter hashes for the sync check."""
        return self.root / "rank_sync"


@dataclass(frozen=True)
class StudentsFolder(StageFolder):
    """``RUN/students/``: stage 2's files."""

    @property
    def sizing(self) -> Path:
        return self.root / "sizing.json"

    def weights(self, agent: str) -> Path:
        """One student's state dict (weights and observation normalisation)."""
        return self.root / f"{agent}.safetensors"


@dataclass(frozen=True)
class RunLayout:
    """Every path of one run folder. ``RunLayout(Path("runs/spread")).students.sizing``."""

    run: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "run", Path(self.run))

    @property
    def lock(self) -> Path:
        """Held by the stage writing into the run (train, distill, export, demo)."""
        return self.run / ".kdx-lock"

    def writing(self, stage: str, create: bool = False) -> AbstractContextManager[None]:
        """Hold the run's writer lock while ``stage`` (e.g. ``"kdx train"``) writes into it.

        A second writer gets a ``KdxError`` naming the holder's PID; ``KdxError`` too when the
        run path is a file. A stage that needs an existing run (``create=False``) takes no lock
        on a missing folder and creates nothing: its own checks then report the missing run.
        """
        if self.run.exists() and not self.run.is_dir():
            raise KdxError(f"{self.run} is a file, not a run folder; choose another folder")
        if not create and not self.run.is_dir():
            return nullcontext()
        return exclusive_lock(self.lock, stage)

    def is_kdx_run(self) -> bool:
        """True when the folder holds something a kdx stage wrote (what `kdx demo --fresh` may delete)."""
        return any(p.exists() for p in (self.teacher.config, self.students.config, self.eval_json, self.bundles,
                                         self.lock))

    @property
    def teacher(self) -> TeacherFolder:
        return TeacherFolder(self.run / "teacher")

    @property
    def students(self) -> StudentsFolder:
        return StudentsFolder(self.run / "students")

    @property
    def eval_json(self) -> Path:
        """Teacher vs students on the same seeds (``kdx evaluate``)."""
        return self.run / "eval.json"

    @property
    def bundles(self) -> Path:
        return self.run / "bundles"

    def bundle(self, target: str) -> Path:
        """The deployment bundle folder of ``target`` (``kdx export --target``)."""
        return self.bundles / target

    def bundle_archive(self, target: str) -> Path:
        """The ``.tar.gz`` of ``bundle(target)``, what is copied to the device."""
        return self.bundles / f"{target}.tar.gz"

    @property
    def devices(self) -> Path:
        """Latency JSON files measured on real devices (``kdx-runtime bench --json``)."""
        return self.run / "devices"

    @property
    def sweep(self) -> Path:
        """Default home of ``kdx sweep``'s job folders (each one a run folder of its own)."""
        return self.run / "sweep"

    @property
    def report_md(self) -> Path:
        return self.run / "report.md"

    @property
    def report_html(self) -> Path:
        return self.run / "report.html"

    @property
    def report_images(self) -> Path:
        """The report's figures, linked from report.md (report.html embeds them)."""
        return self.run / "report_files"
