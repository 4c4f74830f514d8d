"""Precisions and export targets: the one place that names them (torch-free, standard library only).

``PRECISIONS`` (name -> :class:`Precision`) and ``TARGETS`` (name -> :class:`ExportTarget`) are
registries filled here and nowhere else. Everything else imports them: device profiles (a
profile names its target and default precision; ``bytes_per_param`` sizes its budgets), the
manifest schema and the runtime (which values a bundle may hold; TensorRT builder flags),
export (``kdx export --target/--precision``, parity bars, int8 recipes) and the report (the order
of precisions in its tables). ``tests/devices/test_targets.py`` fails if another module spells
out a list of these names, and iterates the registries so that a new entry is tested for free.

This module sits in ``kdx.devices``, the lowest package: the runtime and the workstation
packages may import it, and it imports nothing of kdx.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Precision:
    """One deployment precision: how an exported model stores its weights and does its arithmetic.

    Attributes:
        name: the ``--precision`` value, the manifest's ``precision`` and part of model file names.
        bytes_per_param: storage bytes of one parameter (device budgets, model sizes).
        quantized: made by quantising the fp32 ONNX model (``kdx.export.quantize``), not exported
            from torch directly.
        tensorrt_flag: the ``trt.BuilderFlag`` that enables its kernels before TensorRT 11 (which
            is strongly typed instead), and trtexec's option of the same name; None for fp32.
        min_action_agreement: parity bar: share of greedy actions an exported model must agree
            on with its torch source, on held-out observations (``kdx.export.parity``).
        max_abs_logit_diff: parity bar on the largest |logit difference|; None = not checked.
    """

    name: str
    bytes_per_param: int
    quantized: bool
    tensorrt_flag: str | None
    min_action_agreement: float
    max_abs_logit_diff: float | None = None

    @property
    def trtexec_option(self) -> str:
        """trtexec's command-line option for this precision ("" for fp32, the default)."""
        return f"--{self.tensorrt_flag.lower()}" if self.tensorrt_flag else ""


PRECISIONS: dict[str, Precision] = {
    "fp32": Precision("fp32", bytes_per_param=4, quantized=False, tensorrt_flag=None,
                      min_action_agreement=1.0, max_abs_logit_diff=1e-4),
    "fp16": Precision("fp16", bytes_per_param=2, quantized=False, tensorrt_flag="FP16",
                      min_action_agreement=0.995),
    # INT8 enables the int8 kernels the explicit Q/DQ nodes ask for (no calibrator needed).
    "int8": Precision("int8", bytes_per_param=1, quantized=True, tensorrt_flag="INT8",
                      min_action_agreement=0.99),
}


@dataclass(frozen=True)
class ExportTarget:
    """One deployment target: what ``kdx export --target T`` produces for a kind of device. The
    defaults describe a plain CPU target (onnxruntime or numpy, every precision, fp32 fallback).

    Attributes:
        name: the ``--target`` value (also the manifest's ``target`` and a device profile's).
        default_precision: precision used when ``--precision`` is not given.
        description: one line for the capability table.
        precisions: precisions this target accepts.
        backends: runtime backends that can run the bundle there, best first.
        engine_build_on_device: TensorRT engines are built on the device
            (``kdx-runtime build-engines``), never by ``kdx export``.
        fallback_to_fp32: an agent whose quantised model misses the parity bar is shipped in
            fp32 instead (with a warning), rather than failing the export.
        symmetric_int8_activations: int8 activations quantised with zero point 0 (TensorRT
            accepts only symmetric Q/DQ; onnxruntime on a CPU does better with asymmetric).
            Used by the ``static-qdq`` int8 recipe.
        int8_recipe: how int8 models are made, a key of ``kdx.export.quantize.INT8_RECIPES``.
        native_c: the bundle also holds each policy as C99 source (``kdx.export.c_target``);
            its ONNX models are then fp32 and the precision applies to the C code.
    """

    name: str
    default_precision: str
    description: str
    precisions: tuple[str, ...] = tuple(PRECISIONS)
    backends: tuple[str, ...] = ("onnxruntime", "numpy")
    engine_build_on_device: bool = False
    fallback_to_fp32: bool = True
    symmetric_int8_activations: bool = False
    int8_recipe: str = "static-qdq"
    native_c: bool = False


TARGETS: dict[str, ExportTarget] = {
    "jetson": ExportTarget(
        name="jetson",
        default_precision="fp16",
        description="NVIDIA Jetson: ONNX + calibration data; TensorRT engines built on the device",
        backends=("tensorrt", "onnxruntime", "numpy"),
        engine_build_on_device=True,
        symmetric_int8_activations=True,
    ),
    "rpi": ExportTarget(
        name="rpi",
        default_precision="int8",
        description="Raspberry Pi / ARM CPU: int8 (onnxruntime MatMulInteger, block-wise run-time "
                    "activation scales), fp32 per agent as fallback",
        # Static QDQ ranges cost distilled students 4-6% greedy-action agreement (near ties);
        # per-row run-time ranges with a standardised observation 1-2%, block-wise scales ~0.5-1.4%.
        int8_recipe="blockwise-dynamic",
    ),
    "x86": ExportTarget(name="x86", default_precision="fp32", description="Any x86-64 Linux box: fp32 ONNX"),
    "c": ExportTarget(
        name="c",
        default_precision="fp32",
        description="C99 for robot stacks and microcontrollers: a .h/.c per policy, Makefile, parity "
                    "harness (fp32 ONNX kept beside)",
        precisions=("fp32", "int8"),
        backends=("c", "numpy", "onnxruntime"),
        native_c=True,
    ),
}
