"""Rich tables for device profiles and student sizing (formatting lives only at the CLI edge)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from kdx.devices.profile import DeviceProfile
from kdx.devices.sizing import StudentSizing


def _bytes(n: int) -> str:
    return f"{n / 1024:.0f} KiB" if n >= 1024 and n % 1024 == 0 else f"{n} B" if n < 1024 else f"{n / 1024:.1f} KiB"


def _memory(profile: DeviceProfile) -> str:
    if max(profile.memory_gb) < 1 / 64:  # a microcontroller's SRAM: KiB read better than GB
        return "/".join(f"{m * 1024 * 1024:g}" for m in profile.memory_gb) + " KiB"
    return "/".join(f"{m:g}" for m in profile.memory_gb) + " GB"


def _optional_bytes(n: int | None) -> str:
    return "-" if n is None else _bytes(n)


def _accelerator(profile: DeviceProfile) -> str:
    acc = profile.accelerator
    if acc is None:
        return "none"
    parts = [acc.name]
    if acc.cuda_cores:
        parts.append(f"{acc.cuda_cores} CUDA")
    if acc.tops_int8:
        parts.append(f"{acc.tops_int8:g} TOPS")
    if acc.tflops_fp16:
        parts.append(f"{acc.tflops_fp16:g} TFLOPS fp16")
    return ", ".join(parts)


def profiles_table(profiles: Sequence[DeviceProfile]) -> Table:
    """One row per profile: hardware summary, precision, target and per-agent budgets."""
    table = Table(
        title="kdx device profiles",
        caption="budgets per agent: MACs, parameter memory, latency per decision, and on "
        "microcontrollers the flash and RAM of the generated C (`kdx devices show NAME`)",
    )
    for column in ("name", "target", "CPU", "accelerator", "memory", "precision", "TensorRT"):
        table.add_column(column)
    for column in ("MACs", "params", "latency", "flash", "RAM"):
        table.add_column(column, justify="right")
    for p in profiles:
        table.add_row(
            p.name,
            p.target,
            f"{p.cpu.cores}x {p.cpu.core.split()[0]} {p.cpu.clock_ghz:g} GHz",
            _accelerator(p),
            _memory(p),
            p.default_precision,
            p.tensorrt or "-",
            f"{p.budget.max_macs_per_agent:,}",
            _bytes(p.budget.max_param_bytes_per_agent),
            f"{p.budget.latency_budget_us:g} us",
            _optional_bytes(p.budget.max_flash_bytes_per_agent),
            _optional_bytes(p.budget.max_ram_bytes_per_agent),
        )
    return table


def profile_detail_table(p: DeviceProfile) -> Table:
    """Every field of one profile, as a two-column table."""
    table = Table(title=f"{p.name}: {p.display_name}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    acc = p.accelerator
    rows = [
        ("export target", p.target),
        ("default precision", f"{p.default_precision} ({p.bytes_per_param} byte{'s' if p.bytes_per_param > 1 else ''} per parameter)"),
        ("runtime backends", ", ".join(p.preferred_backends)),
        ("CPU", f"{p.cpu.cores}x {p.cpu.core} @ {p.cpu.clock_ghz:g} GHz ({p.cpu.arch})"),
        ("accelerator", _accelerator(p)),
        ("JetPack / TensorRT", f"{acc.jetpack} / {acc.tensorrt}" if acc and acc.tensorrt else "-"),
        ("memory", _memory(p)),
        ("MACs budget / agent", f"{p.budget.max_macs_per_agent:,}"),
        (
            "parameter memory / agent",
            f"{_bytes(p.budget.max_param_bytes_per_agent)} "
            f"(= {p.max_params_per_agent:,} {p.default_precision} parameters)",
        ),
        ("latency budget / decision", f"{p.budget.latency_budget_us:g} us"),
        ("flash / agent (C code + weights)", _optional_bytes(p.budget.max_flash_bytes_per_agent)),
        ("RAM / agent (buffers + state + stack)", _optional_bytes(p.budget.max_ram_bytes_per_agent)),
        ("cross toolchain", " ".join([p.cross.cc, *p.cross.cflags]) if p.cross else "-"),
        ("notes", p.notes or "-"),
    ]
    for field, value in rows:
        table.add_row(field, value)
    return table


def sizing_table(rows: Sequence[StudentSizing], profile: DeviceProfile) -> Table:
    """The per-agent student table printed by ``kdx distill`` and ``kdx devices size``."""
    budget = profile.budget
    mcu = "".join(
        f", {_bytes(n)} {label}"
        for label, n in (("flash", budget.max_flash_bytes_per_agent), ("RAM", budget.max_ram_bytes_per_agent))
        if n is not None
    )
    table = Table(
        title=f"students for {profile.name} ({profile.default_precision}; budget per agent: "
        f"{budget.max_macs_per_agent:,} MACs, {_bytes(budget.max_param_bytes_per_agent)} parameters{mcu})",
        caption="MACs: Linear-layer multiply-accumulates at batch 1 (FLOPs = 2 x MACs)",
    )
    table.add_column("agent")
    for column in ("obs", "actions"):
        table.add_column(column, justify="right")
    show_view = any(r.view for r in rows)
    if show_view:
        table.add_column("view")
    table.add_column("hidden layers")
    for column in ("params", "MACs", "param memory"):
        table.add_column(column, justify="right")
    show_footprint = any(r.flash_bytes is not None for r in rows)
    if show_footprint:
        table.add_column("flash (est.)", justify="right")
        table.add_column("RAM (est.)", justify="right")
    show_teacher = any(r.teacher_macs is not None for r in rows)
    if show_teacher:
        table.add_column("teacher/student MACs", justify="right")
    table.add_column("chosen by")
    for r in rows:
        if r.source == "override":
            chosen = "override" if r.within_budget else "[bold red]override, OVER BUDGET[/]"
        elif r.limited_by:
            chosen = f"rule, {r.preferred.label} capped by {', '.join(r.limited_by)}"
        else:
            chosen = "rule"
        cells = [
            r.agent,
            str(r.obs_dim),
            str(r.n_actions),
            *([" ".join(r.view) or "full"] if show_view else []),
            r.arch.label,
            f"{r.params:,}",
            f"{r.macs:,}",
            _bytes(r.param_bytes),
        ]
        if show_footprint:
            cells += [_optional_bytes(r.flash_bytes), _optional_bytes(r.ram_bytes)]
        if show_teacher:
            cells.append("-" if r.mac_reduction is None else f"{r.mac_reduction:.1f}x")
        table.add_row(*cells, chosen)
    return table
