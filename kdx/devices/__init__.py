"""kdx.devices: device profiles and resource-aware student sizing. Torch-free.

- ``kdx.devices.targets``: ``PRECISIONS`` (name -> ``Precision``) and ``TARGETS`` (name ->
  ``ExportTarget``), the one definition of both that profiles, manifest, runtime, export and
  report import.
- ``kdx.devices.registry``: ``PROFILES`` (name -> ``DeviceProfile``) loaded from
  ``profiles/*.toml``, and ``get_profile(name_or_path)``.
- ``kdx.devices.mlp``: ``StudentArch`` and ``count_params`` / ``count_macs`` (what is counted).
- ``kdx.devices.sizing``: ``size_students(agents, profile, overrides, teacher_hidden)``,
  ``parse_overrides``, ``write_sizing_json`` / ``read_sizing_json``.
- ``kdx.devices.tables``: rich tables for the CLI (``sizing_table`` for ``kdx distill``).
"""
