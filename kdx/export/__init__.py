"""kdx.export: a run's students (and teacher actor) -> a deployment bundle for one device target.

Modules: ``targets`` (the target registry), ``sources`` (what is read from a run folder),
``calib`` (observations recorded from rollouts), ``onnx_export`` (torch -> ONNX, fp32/fp16, npz
sidecar), ``quantize`` (int8 static QDQ), ``parity`` (onnxruntime or the compiled C vs torch), ``bundle`` (the
atomic bundle writer behind ``kdx export``), ``trtexec`` (``build_engines.sh`` for Jetson bundles;
the engines themselves are built on the device by ``kdx.runtime.tensorrt_build``) and the CLI
module ``commands``; target c: ``c_codegen`` (C99 per policy), ``c_harness`` (Makefile, harness,
rows), ``c_target`` (torch -> C, int8 attempts, C parity).
"""
