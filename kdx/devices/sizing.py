"""Resource-aware student sizing: one small MLP per agent, matched to its observation and
capped by the device profile's budget.

Architectures live in :mod:`kdx.devices.mlp` (re-exported here); their parameters and MACs
are counted by :func:`kdx.devices.cost.count_cost` under its one rule (``COST_RULE``, written
into sizing.json): Linear weight multiply-adds at batch 1, no bias adds.

The capacity rule (``CapacityRule``): width ``= factor * sqrt(obs_dim * n_actions)``, rounded to
the nearest power of two in log space and clamped to ``[min_width, max_width]``; a second
hidden layer of the same width when ``obs_dim >= two_layer_min_obs_dim`` (rich observations,
e.g. SMAC, need more processing than MPE's few coordinates). Both are non-decreasing in
``obs_dim`` and ``n_actions``, so a bigger observation never gets a smaller preferred student.
The preferred architecture is then shrunk to the largest candidate (by MACs) that is no wider
and no deeper and fits the device budget (MACs and parameter memory at the profile's default
precision; on a microcontroller profile also the flash and RAM of the generated C, as
:func:`kdx.devices.footprint.estimate_c_footprint` estimates them) and, when the teacher actor's costs are known, has at least ``min_mac_reduction``
times fewer MACs than the teacher's actor seen from that agent. Under a budget a bigger observation can get a
narrower student, because every layer it feeds costs more.

``kdx distill`` builds its rule from ``DistillConfig.min_mac_reduction`` and
``two_layer_min_obs_dim`` (defaults 30x and 64, the values below), which recipes may set per env
family: MPE's sets 10x and 16, measured on simple_spread (kdx/trainer/recipes/mpe.toml).

Torch-free: agents are plain descriptions (anything with ``name``, ``obs_dim`` and
``n_actions`` attributes, such as ``kdx.envs.base.AgentSpec``, or ``(name, obs_dim, n_actions)``
tuples).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kdx.devices.cost import COST_RULE, AgentCost, NetworkCost, count_cost, mlp_layers
from kdx.devices.footprint import FOOTPRINT_RULE, CPolicyShape, estimate_c_footprint
from kdx.devices.mlp import ACTIVATIONS, StudentArch, student_cost
from kdx.devices.profile import DeviceProfile
from kdx.errors import KdxError
from kdx.fileio import atomic_write_text

__all__ = [
    "ACTIVATIONS", "AgentShape", "CapacityRule", "StudentArch", "StudentSizing", "agent_shapes",
    "mlp_teacher_costs", "parse_overrides", "read_sizing_json", "read_stored_sizing", "size_students",
    "sizing_document", "student_cost", "write_sizing_json",
]

OVERRIDE_SYNTAX = "AGENT=W or AGENT=W1xW2 (hidden widths, e.g. listener_0=16 or agent_1=64x64)"
MAX_OVERRIDE_WIDTH = 4096
MAX_OVERRIDE_LAYERS = 8


@dataclass(frozen=True)
class AgentShape:
    """The part of an agent that sizing needs."""

    name: str
    obs_dim: int
    n_actions: int


@dataclass(frozen=True)
class CapacityRule:
    """How an agent's observation and action sizes choose its preferred student."""

    min_width: int = 16  # also the smallest student kdx will build automatically
    max_width: int = 128
    width_factor: float = 4.0  # width ~ factor * sqrt(obs_dim * n_actions)
    two_layer_min_obs_dim: int = 64  # observations at least this big get two hidden layers
    min_mac_reduction: float = 30.0  # vs the teacher's actor, applied when its hidden sizes are given

    def __post_init__(self) -> None:
        # the two knobs users set (kdx distill and kdx devices size name them as these options)
        if not self.min_mac_reduction >= 1.0:
            raise KdxError(f"--min-mac-reduction must be at least 1 (1 = students may cost as much as the "
                           f"teacher's actor; got {self.min_mac_reduction!r})")
        if self.two_layer_min_obs_dim < 1:
            raise KdxError(f"--two-layer-min-obs-dim must be at least 1 (got {self.two_layer_min_obs_dim!r})")

    @property
    def widths(self) -> tuple[int, ...]:
        """The candidate widths: powers of two from ``min_width`` to ``max_width``."""
        out, w = [], self.min_width
        while w <= self.max_width:
            out.append(w)
            w *= 2
        return tuple(out)

    def preferred(self, obs_dim: int, n_actions: int) -> StudentArch:
        """The student this rule picks before any budget applies."""
        raw = self.width_factor * math.sqrt(obs_dim * n_actions)
        width = 2 ** round(math.log2(raw))
        width = min(max(width, self.min_width), self.max_width)
        depth = 2 if obs_dim >= self.two_layer_min_obs_dim else 1
        return StudentArch((width,) * depth)

    def candidates(self, ceiling: StudentArch) -> list[StudentArch]:
        """Every rule architecture no wider and no deeper than ``ceiling`` (one or two layers)."""
        width, depth = max(ceiling.hidden), len(ceiling.hidden)
        return [
            StudentArch((w,) * d)
            for d in (1, 2)
            if d <= depth
            for w in self.widths
            if w <= width
        ]


@dataclass(frozen=True)
class StudentSizing:
    """The chosen student of one agent and what it and the teacher actor seen from that agent cost."""

    agent: str
    obs_dim: int
    n_actions: int
    arch: StudentArch
    params: int
    macs: int
    param_bytes: int  # params x bytes per parameter at the profile's default precision
    source: str  # "auto" (capacity rule) or "override" (--student)
    preferred: StudentArch  # what the capacity rule wanted before budgets (== arch for overrides)
    limited_by: tuple[str, ...] = ()  # what the preferred student broke: "MACs", "memory", "flash", "RAM", "teacher ratio"
    within_budget: bool = True  # False only for an override that exceeds the device budget
    teacher_macs: int | None = None
    teacher_params: int | None = None
    view: tuple[str, ...] = ()  # the student's view (compact ops, kdx.envs.view_spec); obs_dim is its width
    flash_bytes: int | None = None  # estimated C flash/RAM (kdx.devices.footprint), only for
    ram_bytes: int | None = None  # profiles with flash/RAM budgets (microcontrollers)

    @property
    def cost(self) -> AgentCost:
        """Student and teacher costs of this agent (the teacher's None when it was not given)."""
        teacher = None if self.teacher_macs is None else NetworkCost(self.teacher_params, self.teacher_macs)
        return AgentCost(self.agent, NetworkCost(self.params, self.macs), teacher, self.arch.hidden)

    @property
    def mac_reduction(self) -> float | None:
        """Teacher actor MACs / student MACs, when the teacher is known."""
        return None if self.teacher_macs is None else self.teacher_macs / self.macs

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "obs_dim": self.obs_dim,
            "n_actions": self.n_actions,
            "hidden": list(self.arch.hidden),
            "activation": self.arch.activation,
            "layer_norm": self.arch.layer_norm,
            "params": self.params,
            "macs": self.macs,
            "flops": self.flops,
            "param_bytes": self.param_bytes,
            "source": self.source,
            "preferred_hidden": list(self.preferred.hidden),
            "limited_by": list(self.limited_by),
            "within_budget": self.within_budget,
            "teacher_params": self.teacher_params,
            "teacher_macs": self.teacher_macs,
            "mac_reduction": self.mac_reduction,
            **({"view": list(self.view)} if self.view else {}),
            **({"flash_bytes": self.flash_bytes, "ram_bytes": self.ram_bytes} if self.flash_bytes is not None else {}),
        }

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> StudentSizing:
        arch = StudentArch(tuple(row["hidden"]), row["activation"], row["layer_norm"])
        return cls(
            agent=row["agent"],
            obs_dim=row["obs_dim"],
            n_actions=row["n_actions"],
            arch=arch,
            params=row["params"],
            macs=row["macs"],
            param_bytes=row["param_bytes"],
            source=row["source"],
            preferred=StudentArch(tuple(row["preferred_hidden"]), row["activation"], row["layer_norm"]),
            limited_by=tuple(row["limited_by"]),
            within_budget=row["within_budget"],
            teacher_macs=row["teacher_macs"],
            teacher_params=row["teacher_params"],
            view=tuple(row.get("view", ())),
            flash_bytes=row.get("flash_bytes"),
            ram_bytes=row.get("ram_bytes"),
        )


# --- agents and overrides -------------------------------------------------------------------


def agent_shapes(agents: Iterable[Any]) -> tuple[AgentShape, ...]:
    """Normalise agent descriptions (objects with name/obs_dim/n_actions, or tuples)."""
    shapes = []
    for agent in agents:
        if isinstance(agent, (tuple, list)):
            if len(agent) != 3:
                raise KdxError(f"an agent tuple must be (name, obs_dim, n_actions), got {agent!r}.")
            name, obs_dim, n_actions = agent
        else:
            name, obs_dim, n_actions = agent.name, agent.obs_dim, agent.n_actions
        for label, value in (("obs_dim", obs_dim), ("n_actions", n_actions)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise KdxError(f"agent {name!r}: {label} must be a positive integer, got {value!r}.")
        shapes.append(AgentShape(str(name), obs_dim, n_actions))
    names = [s.name for s in shapes]
    if not shapes:
        raise KdxError("student sizing needs at least one agent.")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise KdxError(f"agent names must be unique; repeated: {', '.join(duplicates)}.")
    return tuple(shapes)


_WIDTHS = re.compile(r"^[1-9][0-9]*(x[1-9][0-9]*)*$")


def parse_overrides(specs: Iterable[str], agent_names: Sequence[str]) -> dict[str, StudentArch]:
    """Parse ``["listener_0=16", "agent_1=64x64"]`` into ``{agent: StudentArch}``.

    Raises :class:`KdxError` for a malformed item (stating the syntax), an agent that does not
    exist (listing the agents) or an agent given twice.
    """
    known = list(agent_names)
    out: dict[str, StudentArch] = {}
    for spec in specs:
        name, sep, widths = (part.strip() for part in spec.partition("="))
        if not sep or not name or not _WIDTHS.match(widths):
            raise KdxError(f"malformed student override {spec!r}; expected {OVERRIDE_SYNTAX}.")
        if name not in known:
            raise KdxError(
                f"student override {spec!r} names unknown agent {name!r}; "
                f"agents: {', '.join(known)}."
            )
        if name in out:
            raise KdxError(f"agent {name!r} is overridden twice; give one --student per agent.")
        hidden = tuple(int(w) for w in widths.split("x"))
        if len(hidden) > MAX_OVERRIDE_LAYERS or max(hidden) > MAX_OVERRIDE_WIDTH:
            raise KdxError(
                f"student override {spec!r}: at most {MAX_OVERRIDE_LAYERS} hidden layers of at "
                f"most {MAX_OVERRIDE_WIDTH} units; a student is meant to be small."
            )
        out[name] = StudentArch(hidden)
    return out


# --- sizing ---------------------------------------------------------------------------------


def _cost(arch: StudentArch, agent: AgentShape) -> NetworkCost:
    return student_cost(arch, agent.obs_dim, agent.n_actions)


def _footprint(arch: StudentArch, agent: AgentShape, profile: DeviceProfile) -> tuple[int, int] | None:
    """Estimated C ``(flash, RAM)`` bytes, for a profile that budgets them (else None)."""
    budget = profile.budget
    if budget.max_flash_bytes_per_agent is None and budget.max_ram_bytes_per_agent is None:
        return None
    return estimate_c_footprint(CPolicyShape(agent.obs_dim, arch.hidden, agent.n_actions, profile.default_precision))


def _over_budget(arch: StudentArch, agent: AgentShape, profile: DeviceProfile) -> list[str]:
    """The budgets ``arch`` breaks for ``agent`` on ``profile``: "MACs", "memory", "flash", "RAM"."""
    cost = _cost(arch, agent)
    budget = profile.budget
    out = []
    if cost.macs > budget.max_macs_per_agent:
        out.append("MACs")
    if cost.params * profile.bytes_per_param > budget.max_param_bytes_per_agent:
        out.append("memory")
    footprint = _footprint(arch, agent, profile)
    if footprint is not None:
        flash, ram = footprint
        if budget.max_flash_bytes_per_agent is not None and flash > budget.max_flash_bytes_per_agent:
            out.append("flash")
        if budget.max_ram_bytes_per_agent is not None and ram > budget.max_ram_bytes_per_agent:
            out.append("RAM")
    return out


def _fits(arch: StudentArch, agent: AgentShape, profile: DeviceProfile) -> bool:
    return not _over_budget(arch, agent, profile)


def _row(agent, arch, profile, source, preferred, limited_by=(), teacher: NetworkCost | None = None) -> StudentSizing:
    cost = _cost(arch, agent)
    footprint = _footprint(arch, agent, profile)
    return StudentSizing(
        agent=agent.name,
        obs_dim=agent.obs_dim,
        n_actions=agent.n_actions,
        arch=arch,
        params=cost.params,
        macs=cost.macs,
        param_bytes=cost.params * profile.bytes_per_param,
        source=source,
        preferred=preferred,
        limited_by=tuple(limited_by),
        within_budget=_fits(arch, agent, profile),
        teacher_macs=None if teacher is None else teacher.macs,
        teacher_params=None if teacher is None else teacher.params,
        flash_bytes=None if footprint is None else footprint[0],
        ram_bytes=None if footprint is None else footprint[1],
    )


def _shortfall_message(agent: AgentShape, smallest: StudentArch, profile: DeviceProfile) -> str:
    cost = _cost(smallest, agent)
    macs, param_bytes = cost.macs, cost.params * profile.bytes_per_param
    budget = profile.budget
    parts = []
    if macs > budget.max_macs_per_agent:
        short = macs - budget.max_macs_per_agent
        parts.append(
            f"{macs} MACs against a budget of {budget.max_macs_per_agent} "
            f"(short by {short} MACs, {100 * short / budget.max_macs_per_agent:.0f}%)"
        )
    if param_bytes > budget.max_param_bytes_per_agent:
        short = param_bytes - budget.max_param_bytes_per_agent
        parts.append(
            f"{param_bytes} bytes of {profile.default_precision} parameters against a budget of "
            f"{budget.max_param_bytes_per_agent} (short by {short} bytes, "
            f"{100 * short / budget.max_param_bytes_per_agent:.0f}%)"
        )
    footprint = _footprint(smallest, agent, profile)
    for label, need, have in (
        ("flash", footprint and footprint[0], budget.max_flash_bytes_per_agent),
        ("RAM", footprint and footprint[1], budget.max_ram_bytes_per_agent),
    ):
        if have is not None and need is not None and need > have:
            parts.append(f"~{need} bytes of {label} (estimated, C code) against a budget of {have} "
                         f"(short by {need - have} bytes, {100 * (need - have) / have:.0f}%)")
    return (
        f"agent {agent.name!r} (obs {agent.obs_dim}, {agent.n_actions} actions): the smallest "
        f"student ({smallest.label}) needs " + " and ".join(parts)
    )


def size_students(
    agents: Iterable[Any],
    profile: DeviceProfile,
    overrides: Mapping[str, StudentArch] | None = None,
    teacher: Mapping[str, NetworkCost] | None = None,
    rule: CapacityRule | None = None,
    activation: str = "relu",
    layer_norm: bool = False,
) -> list[StudentSizing]:
    """Choose each agent's student: the capacity rule's pick, shrunk to fit ``profile``.

    ``overrides`` (from :func:`parse_overrides`) are taken as given and never shrunk; one that
    exceeds the device budget is kept and marked ``within_budget=False``. ``teacher`` (agent ->
    the cost of the teacher actor seen from that agent; ``kdx distill`` counts the real actor,
    :func:`mlp_teacher_costs` approximates one from its hidden widths) adds the rule's minimum
    MAC reduction against it as a further cap and fills ``teacher_macs``/``teacher_params``.
    Raises :class:`KdxError` when the profile cannot fit even the smallest student of an
    automatically sized agent, saying by how much.

    ``activation`` and ``layer_norm`` apply to every student (auto and overridden), so that the
    parameter counts match the networks distillation builds.
    """
    if activation not in ACTIVATIONS:
        raise KdxError(f"unknown student activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}.")
    rule = rule or CapacityRule()
    overrides = {
        name: replace(arch, activation=activation, layer_norm=layer_norm)
        for name, arch in (overrides or {}).items()
    }
    shapes = agent_shapes(agents)
    unknown = sorted(set(overrides) - {s.name for s in shapes})
    if unknown:
        raise KdxError(
            f"student override(s) for unknown agent(s) {', '.join(unknown)}; "
            f"agents: {', '.join(s.name for s in shapes)}."
        )
    if teacher is not None and (lacking := [s.name for s in shapes if s.name not in teacher]):
        raise KdxError(f"no teacher cost for agent(s) {', '.join(lacking)}.")
    smallest = StudentArch((rule.min_width,), activation, layer_norm)
    too_big = [
        _shortfall_message(s, smallest, profile)
        for s in shapes
        if s.name not in overrides and not _fits(smallest, s, profile)
    ]
    if too_big:
        raise KdxError(
            f"device profile {profile.name!r} cannot fit even the smallest student: "
            + "; ".join(too_big)
            + ". Choose a larger profile (`kdx devices list`), a profile file of your own with a "
            "bigger budget, or override the agent with --student AGENT=WIDTH."
        )

    rows = []
    for agent in shapes:
        teacher_cost = None if teacher is None else teacher[agent.name]
        if agent.name in overrides:
            arch = overrides[agent.name]
            rows.append(_row(agent, arch, profile, "override", arch, teacher=teacher_cost))
            continue
        preferred = replace(rule.preferred(agent.obs_dim, agent.n_actions), activation=activation, layer_norm=layer_norm)
        fitting = [
            replace(a, activation=activation, layer_norm=layer_norm) for a in rule.candidates(preferred)
        ]
        fitting = [a for a in fitting if _fits(a, agent, profile)]
        if teacher_cost is not None:
            ratio_cap = teacher_cost.macs / rule.min_mac_reduction
            # If even the smallest student misses the ratio, keep the smallest that fits the device.
            fitting = [a for a in fitting if _cost(a, agent).macs <= ratio_cap] or fitting[:1]
        chosen = max(fitting, key=lambda a: (_cost(a, agent).macs, -len(a.hidden)))
        limits = _limits(agent, preferred, chosen, profile, teacher_cost, rule)
        rows.append(_row(agent, chosen, profile, "auto", preferred, limits, teacher_cost))
    return rows


def _limits(agent, preferred, chosen, profile, teacher: NetworkCost | None, rule) -> list[str]:
    """Which constraints the preferred student broke, if the chosen one differs from it."""
    if chosen == preferred:
        return []
    out = _over_budget(preferred, agent, profile)
    if teacher is not None and _cost(preferred, agent).macs > teacher.macs / rule.min_mac_reduction:
        out.append("teacher ratio")
    return out


# --- sizing.json ----------------------------------------------------------------------------

# 2: each agent also stores the teacher actor's cost seen from that agent (teacher_params,
# teacher_macs counted from the real actor), and "cost_rule" says how everything was counted.
SIZING_SCHEMA_VERSION = 2
_OLDER_SCHEMA_VERSIONS = (1,)


def _footprint_budget(profile: DeviceProfile) -> dict[str, Any]:
    budget = profile.budget
    if budget.max_flash_bytes_per_agent is None and budget.max_ram_bytes_per_agent is None:
        return {}
    return {
        "max_flash_bytes_per_agent": budget.max_flash_bytes_per_agent,
        "max_ram_bytes_per_agent": budget.max_ram_bytes_per_agent,
        "footprint_rule": FOOTPRINT_RULE,
    }


def sizing_document(
    rows: Sequence[StudentSizing],
    profile: DeviceProfile,
    rule: CapacityRule | None = None,
) -> dict[str, Any]:
    """The JSON-ready content of ``students/sizing.json``."""
    rule = rule or CapacityRule()
    return {
        "schema_version": SIZING_SCHEMA_VERSION,
        "profile": profile.name,
        "target": profile.target,
        "precision": profile.default_precision,
        "bytes_per_param": profile.bytes_per_param,
        "budget": {
            "max_macs_per_agent": profile.budget.max_macs_per_agent,
            "max_param_bytes_per_agent": profile.budget.max_param_bytes_per_agent,
            "latency_budget_us": profile.budget.latency_budget_us,
            **_footprint_budget(profile),
        },
        "capacity_rule": {
            "min_width": rule.min_width,
            "max_width": rule.max_width,
            "width_factor": rule.width_factor,
            "two_layer_min_obs_dim": rule.two_layer_min_obs_dim,
            "min_mac_reduction": rule.min_mac_reduction,
        },
        "cost_rule": COST_RULE,
        "agents": [row.to_dict() for row in rows],
    }


def write_sizing_json(
    path: str | Path,
    rows: Sequence[StudentSizing],
    profile: DeviceProfile,
    rule: CapacityRule | None = None,
) -> Path:
    """Write ``RUN/students/sizing.json`` atomically (temporary file, then ``os.replace``).

    Creates the parent folder. Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(sizing_document(rows, profile, rule), indent=2) + "\n"
    atomic_write_text(path, text)
    return path


def _read_document(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise KdxError(f"cannot read student sizing {path}: {exc.strerror or exc}.") from exc
    except json.JSONDecodeError as exc:
        raise KdxError(f"{path} is not valid JSON ({exc}); re-run `kdx distill` to rewrite it.") from exc


def _rows(path: Path, doc: Any) -> list[StudentSizing]:
    if not isinstance(doc, dict) or doc.get("schema_version") != SIZING_SCHEMA_VERSION:
        found = doc.get("schema_version") if isinstance(doc, dict) else None
        raise KdxError(
            f"{path}: sizing schema version {found!r}, this kdx reads version "
            f"{SIZING_SCHEMA_VERSION}; re-run `kdx distill` to rewrite it."
        )
    try:
        return [StudentSizing.from_dict(row) for row in doc["agents"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise KdxError(f"{path}: malformed agent entry ({exc!r}); re-run `kdx distill`.") from exc


def read_sizing_json(path: str | Path) -> list[StudentSizing]:
    """Read the rows back from a ``sizing.json`` written by :func:`write_sizing_json`."""
    path = Path(path)
    return _rows(path, _read_document(path))


def read_stored_sizing(path: str | Path) -> list[StudentSizing] | None:
    """The rows of a run's ``sizing.json``, or None when the run has none or an older kdx wrote
    it (before the teacher's costs were stored): the caller then counts the costs itself, with
    the same function. A damaged file still raises :class:`KdxError`."""
    path = Path(path)
    if not path.is_file():
        return None
    doc = _read_document(path)
    if isinstance(doc, dict) and doc.get("schema_version") in _OLDER_SCHEMA_VERSIONS:
        return None
    return _rows(path, doc)


def mlp_teacher_costs(agents: Iterable[Any], hidden: Sequence[int]) -> dict[str, NetworkCost]:
    """A teacher actor approximated, per agent, as a plain MLP ``obs_dim -> hidden -> n_actions``
    (what ``kdx devices size --teacher-hidden`` knows without a run). kdx's shared actor also
    reads the agent id and normalises its layers, so the cost ``kdx distill`` counts from the
    real actor is a little higher."""
    return {a.name: count_cost(mlp_layers(a.obs_dim, hidden, a.n_actions)) for a in agent_shapes(agents)}
