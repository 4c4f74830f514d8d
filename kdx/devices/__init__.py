"""kdx.devices: device profiles and resource-aware student sizing. Torch-free.

- ``kdx.devices.targets``: ``PRECISIONS`` (name -> ``Precision``) and ``TARGETS`` (name ->
  ``ExportTarget``), the one definition of both that profiles, manifest, runtime, export and
  report import.
- ``kdx.devices.registry``: ``PROFILES`` (name -> ``DeviceProfile``) loaded from
  ``profiles/*.toml``, and ``get_profile(name_or_path)``.
- ``kdx.devices.cost``: the one cost rule (``COST_RULE``) and ``count_cost(layers)``: parameters
  and MACs of a network described by its layers; every stored or printed cost comes from it.
- ``kdx.devices.mlp``: ``StudentArch``, ``student_layers`` and ``student_cost``.
- ``kdx.devices.sizing``: ``size_students(agents, profile, overrides, teacher)``,
  ``parse_overrides``, ``write_sizing_json`` / ``read_sizing_json`` / ``read_stored_sizing``.
- ``kdx.devices.tables``: rich tables for the CLI (``sizing_table`` for ``kdx distill``).
"""
