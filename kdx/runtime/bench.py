"""``kdx-runtime bench``: per-agent decision latency of a bundle, students and teacher side by
side, with the device and library versions recorded. Pure data out; the CLI formats it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kdx.errors import KdxError
from kdx.runtime.bundle import AUTO, BackendMissing, Bundle
from kdx.runtime.policy import Policy
from kdx.runtime.profiler import LatencyStats, device_info, peak_rss_mib, time_calls

N_DISTINCT_OBS = 1024  # cycled, so the timed calls do not see one cached input


@dataclass
class BenchEntry:
    """One (agent, role) measurement; ``samples_ns`` are the raw per-decision times."""

    agent: str
    role: str
    backend: str
    stats: LatencyStats
    load_ms: float
    params: int
    macs: int
    samples_ns: np.ndarray = field(repr=False)
    selection: dict[str, float | str] | None = None
    source: str = ""
    precision: str = ""

    def to_dict(self, with_samples: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "agent": self.agent, "role": self.role, "backend": self.backend,
            **self.stats.to_dict(), "load_ms": self.load_ms, "params": self.params,
            "macs": self.macs, "auto_selection": self.selection, "source": self.source,
            "precision": self.precision,
        }
        if with_samples:
            out["samples_ns"] = self.samples_ns.tolist()
        return out


def random_observations(obs_dim: int, n: int = N_DISTINCT_OBS, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, obs_dim)).astype(np.float32)


def bench_policy(policy: Policy, iters: int, warmup: int, seed: int = 0) -> tuple[LatencyStats, np.ndarray]:
    """Time ``iters`` decisions of ``policy`` on distinct random observations."""
    obs = random_observations(policy.obs_dim, seed=seed)
    rows = list(obs)  # views made up front: the loop times act(), not indexing
    n = len(rows)
    act = policy.act
    samples = time_calls(lambda i: act(rows[i % n]), iters, warmup)
    return LatencyStats.from_samples_ns(samples), samples


def bench_bundle(bundle: Bundle, agents: list[str] | None = None, backend: str = AUTO,
                 roles: tuple[str, ...] = ("student", "teacher"), iters: int = 10_000,
                 warmup: int = 1_000) -> dict[str, Any]:
    """Benchmark every requested agent and role; returns a JSON-ready dict with the entries
    (``entries``: BenchEntry), ``teacher_over_student`` p50 ratios, peak RSS and device info.

    An agent that no backend installed here can run is skipped with a one-line note in
    ``skipped`` ("teacher agent_0: skipped, needs onnxruntime (...)"); KdxError if nothing ran."""
    names = agents or bundle.agent_names
    entries: list[BenchEntry] = []
    skipped: list[str] = []
    for name in names:
        for role in roles:
            if role == "teacher" and not bundle.has_teacher:
                continue
            start = time.perf_counter()
            try:
                policy = bundle.policy(name, backend=backend, role=role)
            except BackendMissing as exc:
                skipped.append(f"{role} {name}: skipped, {exc.note}")
                continue
            load_ms = (time.perf_counter() - start) * 1e3
            stats, samples = bench_policy(policy, iters, warmup)
            entries.append(BenchEntry(name, role, policy.backend_name, stats, load_ms,
                                      policy.agent.params, policy.agent.macs, samples,
                                      policy.selection, policy.backend.source, policy.agent.precision))
    if not entries and skipped:
        raise KdxError("nothing to benchmark here: " + "; ".join(skipped))
    ratios = {}
    for entry in entries:
        if entry.role == "teacher":
            student = next((e for e in entries if e.agent == entry.agent and e.role == "student"), None)
            if student is not None:
                ratios[entry.agent] = entry.stats.p50_us / student.stats.p50_us
    return {
        "entries": entries,
        "skipped": skipped,
        "teacher_over_student_p50": ratios,
        "bundle_load_ms": bundle.load_seconds * 1e3,
        "peak_rss_mib": peak_rss_mib(),
        "iters": iters,
        "warmup": warmup,
        "device": device_info(),
    }


def bench_json(report: dict[str, Any], bundle: Bundle, with_samples: bool = True) -> dict[str, Any]:
    m = bundle.manifest
    return {
        **{k: v for k, v in report.items() if k != "entries"},
        "bundle": {"path": str(bundle.path), "target": m.target, "precision": m.precision,
                   "env": m.env, "kdx_version": m.kdx_version, "schema_version": m.schema_version},
        "results": [e.to_dict(with_samples) for e in report["entries"]],
    }
