"""kdx.export: a run's students (and teacher actor) -> a deployment bundle for one device target.

Modules: ``targets`` (the target registry), ``sources`` (what is read from a run folder),
``calib`` (observations recorded from rollouts), ``onnx_export`` (torch -> ONNX, fp32/fp16, npz
sidecar), ``quantize`` (int8 static QDQ), ``parity`` (onnxruntime vs torch), ``bundle`` (the
atomic bundle writer behind ``kdx export``), ``tensorrt`` (engines built on the device, torch-free)
and the CLI modules ``commands`` and ``runtime_commands`` (``kdx-runtime build-engines``).
"""
