"""The latency model's least squares, the CPU factors, profile matching and the Pareto front,
against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kdx.devices.registry import PROFILES
from kdx.report.collect import LatencyResult, LatencySet
from kdx.report.estimates import match_profile
from kdx.report.latency_model import (
    CORE_FACTORS,
    clock_from_cpu_model,
    core_factor,
    cpu_speed,
    fit_latency_model,
)
from kdx.report.plots import pareto_front


def test_fit_recovers_an_exact_line():
    macs = [400, 6000, 20000]
    model = fit_latency_model(macs, [3.0 + 0.002 * m for m in macs])
    assert model.overhead_us == pytest.approx(3.0)
    assert model.us_per_mac == pytest.approx(0.002)
    assert model.p50_us(10_000) == pytest.approx(23.0)
    assert model.macs_per_us == pytest.approx(500.0)
    assert model.n_points == 3


def test_fit_is_least_squares_on_noisy_points():
    # x = 0, 1, 2, 3; y = 1, 3, 2, 5: slope = sum(dx*dy)/sum(dx^2) = 5.5/5 = 1.1; a = 2.75 - 1.1*1.5
    model = fit_latency_model([0, 1, 2, 3], [1, 3, 2, 5])
    assert model.us_per_mac == pytest.approx(1.1)
    assert model.overhead_us == pytest.approx(1.1)
    assert model.overhead_us == pytest.approx(float(np.polyfit([0, 1, 2, 3], [1, 3, 2, 5], 1)[1]))


def test_fit_never_gives_negative_cost():
    # bigger networks measured faster (noise): no MAC cost, the overhead is the mean
    falling = fit_latency_model([100, 200, 300], [5.0, 4.0, 3.0])
    assert (falling.overhead_us, falling.us_per_mac) == (pytest.approx(4.0), 0.0)
    # OLS intercept would be negative: forced through the origin, b = sum(xy)/sum(xx)
    steep = fit_latency_model([1, 2, 3], [1.0, 4.0, 7.0])  # OLS: a = -2, b = 3
    assert steep.overhead_us == 0.0
    assert steep.us_per_mac == pytest.approx((1 + 8 + 21) / (1 + 4 + 9))
    # one distinct MACs value: overhead only
    same = fit_latency_model([500, 500], [2.0, 4.0])
    assert (same.overhead_us, same.us_per_mac) == (pytest.approx(3.0), 0.0)
    assert math.isinf(same.macs_per_us)


def test_fit_refuses_bad_input():
    with pytest.raises(ValueError, match="no"):
        fit_latency_model([], [])
    with pytest.raises(ValueError, match="2 MACs values but 1"):
        fit_latency_model([1, 2], [1.0])


def test_scaling_multiplies_both_terms():
    model = fit_latency_model([0, 1000], [2.0, 4.0]).scaled(2.5, "x")
    assert model.overhead_us == pytest.approx(5.0)
    assert model.p50_us(1000) == pytest.approx(10.0)
    assert model.source == "x"


def test_cpu_factors():
    assert cpu_speed(2.4, "Cortex-A76", "aarch64") == pytest.approx(2.4 * CORE_FACTORS["Cortex-A76"])
    assert core_factor("unknown core", "aarch64") == 0.5
    assert core_factor(None, "x86_64") == 1.0
    # every shipped profile's core has a documented factor
    assert {p.cpu.core for p in PROFILES.values()} <= set(CORE_FACTORS)
    assert clock_from_cpu_model("Intel(R) Xeon(R) CPU E5-2686 v4 @ 2.30GHz") == 2.3
    assert clock_from_cpu_model("AMD EPYC") is None


def _device_set(source: str, board: str | None) -> LatencySet:
    return LatencySet("d", "device", source, {"board_model": board}, {},
                      [LatencyResult("a", "student", "onnxruntime", "int8", 1.0, 2.0, 100)])


@pytest.mark.parametrize(("source", "board", "expected"), [
    ("RUN/devices/rpi5.json", None, "rpi5"),
    ("RUN/devices/rpi4-fan.json", "anything", "rpi4"),
    ("RUN/devices/lab.json", "Raspberry Pi 5 Model B Rev 1.0", "rpi5"),
    ("RUN/devices/lab.json", "Raspberry Pi 4 Model B Rev 1.4", "rpi4"),
    ("RUN/devices/bench.json", "NVIDIA Jetson Orin Nano Developer Kit", "jetson-orin-nano"),
    ("RUN/devices/bench.json", "NVIDIA Jetson Xavier NX Developer Kit", "jetson-xavier-nx"),
    ("RUN/devices/laptop.json", None, None),
])
def test_device_files_are_matched_to_profiles(source, board, expected):
    assert match_profile(_device_set(source, board), PROFILES) == expected


def test_pareto_front_keeps_only_undominated_points():
    points = [(100, 0.9), (200, 0.95), (150, 0.8), (1000, 1.0), (1000, 0.9), (200, 0.95)]
    assert pareto_front(points) == [(100, 0.9), (200, 0.95), (1000, 1.0)]
