"""Per device profile, an *estimated* decision latency of each teacher and student.

For a profile whose device has a bench file in ``RUN/devices/`` the latency model is fitted on
that device's own measurements; otherwise the host's fit is scaled by the relative CPU factor
of :mod:`kdx.report.latency_model`. Both are estimates and labelled so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from kdx.report.collect import LatencySet, ReportData
from kdx.report.latency_model import (
    LatencyModel,
    cpu_speed,
    fit_latency_model,
    host_clock_ghz,
)


@dataclass(frozen=True)
class EstimateRow:
    agent: str
    role: str
    macs: int
    p50_us: float


@dataclass
class ProfileEstimate:
    """The model used for one profile, how it was obtained, and its predictions."""

    profile: str
    display_name: str
    model: LatencyModel
    basis: str  # "device" (fitted on that device's file) or "scaled host"
    factor: float | None  # host -> device slow-down, for "scaled host"
    budget_us: float
    rows: list[EstimateRow] = field(default_factory=list)


def fit_latency_set(latency: LatencySet) -> LatencyModel | None:
    """The latency model fitted on every (MACs, p50) point of ``latency`` (None: no MACs known)."""
    points = [(r.macs, r.p50_us) for r in latency.results if r.macs]
    if not points:
        return None
    macs, p50 = zip(*points)
    return fit_latency_model(macs, p50, source=latency.label)


def match_profile(latency: LatencySet, profiles: dict) -> str | None:
    """The profile a device file belongs to: its file name starts with the profile name
    (``rpi5.json``, ``rpi5-fan.json``), else the board model names the profile's display name."""
    stem = latency.source.rsplit("/", 1)[-1].removesuffix(".json").lower()
    by_name = [name for name in profiles if stem == name or stem.startswith(name + "-") or stem.startswith(name + "_")]
    if by_name:
        return max(by_name, key=len)
    board = " ".join(str(latency.device.get("board_model") or "").lower().replace("-", " ").split())
    by_board = [name for name, p in profiles.items() if board and _model_words(p.display_name) in board]
    return max(by_board, key=lambda n: len(profiles[n].display_name)) if by_board else None


def _model_words(display_name: str) -> str:
    # "NVIDIA Jetson Orin Nano 8GB" -> "jetson orin nano": memory sizes and the vendor word vary
    # in board strings (/proc/device-tree/model), the model words do not.
    words = [w for w in display_name.lower().replace("-", " ").split()
             if w != "nvidia" and not re.fullmatch(r"[\d/]+gb(/[\d]+gb)?", w)]
    return " ".join(words)


def host_speed(latency: LatencySet) -> float:
    machine = str(latency.device.get("machine") or "")
    clock, _ = host_clock_ghz(latency.device)
    core = "generic x86-64" if machine.lower() in ("x86_64", "amd64") else None
    return cpu_speed(clock, core, machine)


def _pick_host(data: ReportData, target: str) -> LatencySet | None:
    for wanted in (lambda s: s.bundle.get("target") == target, lambda s: s.bundle.get("precision") == "fp32",
                   lambda s: True):
        for latency in data.host:
            if wanted(latency) and fit_latency_set(latency) is not None:
                return latency
    return None


def _macs(data: ReportData, agent: str, role: str, measured: list[LatencySet]) -> int | None:
    cost = data.costs.get(agent)
    net = getattr(cost, role, None) if cost is not None else None
    if net is not None:
        return net.macs
    for latency in measured:
        result = latency.result(agent, role)
        if result is not None and result.macs:
            return result.macs
    return None


def estimate_profiles(data: ReportData, profiles: dict | None = None) -> list[ProfileEstimate]:
    """One :class:`ProfileEstimate` per profile that has a basis (a device file, or a host
    measurement to scale); empty when neither exists."""
    if profiles is None:
        from kdx.devices.registry import PROFILES as profiles
    by_profile = {}
    for latency in data.devices:
        name = match_profile(latency, profiles)
        if name is not None and fit_latency_set(latency) is not None:
            by_profile.setdefault(name, latency)
    out = []
    for name, profile in profiles.items():
        if profile.target == "c" and name not in by_profile:
            # A microcontroller runs no Python runtime: scaling the host's per-call overhead to it
            # would be meaningless. Its flash/RAM are in the C bundle's c/footprint.json instead.
            continue
        if name in by_profile:
            model, basis, factor = fit_latency_set(by_profile[name]), "device", None
        else:
            host = _pick_host(data, profile.target)
            if host is None:
                continue
            factor = host_speed(host) / cpu_speed(profile.cpu.clock_ghz, profile.cpu.core, profile.cpu.arch)
            model = fit_latency_set(host).scaled(factor, f"{host.label} x {factor:.2f}")
            basis = "scaled host"
        estimate = ProfileEstimate(name, profile.display_name, model, basis, factor, profile.budget.latency_budget_us)
        for agent in data.agents:
            for role in ("teacher", "student"):
                macs = _macs(data, agent, role, [*data.host, *data.devices])
                if macs:
                    estimate.rows.append(EstimateRow(agent, role, macs, model.p50_us(macs)))
        out.append(estimate)
    return out
