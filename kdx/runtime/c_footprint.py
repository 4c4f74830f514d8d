"""Flash and RAM of a C bundle's policies on each microcontroller profile: ``c/footprint.json``.

``kdx export --target c`` (or ``--target stm32f4`` and the other profiles whose target is ``c``)
calls :func:`bundle_footprints` once the C sources are written: every policy (students, and the
teacher actor for comparison) is measured with the profile's cross toolchain when it is
installed, else estimated (:mod:`kdx.devices.cross_size`, :mod:`kdx.devices.footprint`), and
:func:`write_footprint_json` stores the rows beside the sources; the manifest lists the file
with its sha256. ``kdx-runtime info`` reads it back with :func:`read_footprint_json`.

Format (version 1)::

    {"schema_version": 1, "estimate_rule": FOOTPRINT_RULE, "profiles": [name, ...],
     "rows": [CFootprint.to_dict(), ...]}
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from kdx.devices.cross_size import c_footprint
from kdx.devices.footprint import FOOTPRINT_RULE, CFootprint, CPolicyShape, mcu_profiles
from kdx.devices.profile import DeviceProfile
from kdx.errors import KdxError
from kdx.fileio import atomic_write_text, sha256_file
from kdx.runtime.manifest import AgentEntry, FileEntry

FOOTPRINT_NAME = "c/footprint.json"
FOOTPRINT_SCHEMA_VERSION = 1


def footprint_profiles(target: str) -> list[DeviceProfile]:
    """The profiles to report for ``kdx export --target TARGET``: that profile when TARGET names a
    microcontroller profile, else every shipped one (``stm32f4``, ``stm32h7``, ``esp32-s3``)."""
    from kdx.devices.registry import PROFILES

    named = PROFILES.get(target)
    if named is not None and named.target == "c":
        return [named]
    return mcu_profiles()


def policy_shape(entry: AgentEntry) -> CPolicyShape:
    """What the estimate needs of a manifest entry (the agent-id one-hot counts as input)."""
    state = entry.recurrent_state_shape[1] if entry.recurrent_state_shape else 0
    return CPolicyShape(entry.model_input_dim, tuple(entry.hidden_sizes), entry.n_actions, entry.precision, state)


def bundle_footprints(
    bundle_dir: Path,
    entries: Sequence[AgentEntry],
    profiles: Sequence[DeviceProfile],
) -> list[CFootprint]:
    """One row per (profile, policy with a C source): measured or estimated, see the module
    docstring. Identical sources are compiled once per profile (a shared teacher's per-agent
    copies often are)."""
    bundle_dir = Path(bundle_dir)
    c_root = bundle_dir / "c"
    rows: list[CFootprint] = []
    done: dict[tuple[str, str, str], CFootprint] = {}
    for profile in profiles:
        for entry in entries:
            source = entry.file_of_kind("c_source")
            if source is None:
                continue
            path = bundle_dir / source.path
            key = (profile.name, sha256_file(path), entry.precision)
            if key not in done:
                done[key] = c_footprint(entry.name, path, [path.parent, c_root], policy_shape(entry), profile)
            rows.append(replace(done[key], agent=entry.name, role=entry.role))
    return rows


def footprint_document(rows: Sequence[CFootprint]) -> dict[str, Any]:
    """The JSON-ready content of ``c/footprint.json``."""
    return {
        "schema_version": FOOTPRINT_SCHEMA_VERSION,
        "estimate_rule": FOOTPRINT_RULE,
        "profiles": sorted({r.profile for r in rows}),
        "rows": [r.to_dict() for r in rows],
    }


def write_footprint_json(bundle_dir: Path, rows: Sequence[CFootprint]) -> Path:
    """Write ``bundle_dir/c/footprint.json`` atomically; returns its path."""
    path = Path(bundle_dir) / FOOTPRINT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(footprint_document(rows), indent=2) + "\n")
    return path


def read_footprint_json(bundle_dir: Path) -> list[CFootprint] | None:
    """The rows of a bundle's ``c/footprint.json``; None when the bundle has none."""
    path = Path(bundle_dir) / FOOTPRINT_NAME
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise KdxError(f"{path}: unreadable footprint report ({exc}); re-export the bundle.") from exc
    if not isinstance(doc, dict) or doc.get("schema_version") != FOOTPRINT_SCHEMA_VERSION:
        raise KdxError(f"{path}: footprint schema {doc.get('schema_version') if isinstance(doc, dict) else None!r}, "
                       f"this kdx reads {FOOTPRINT_SCHEMA_VERSION}; re-export the bundle.")
    rows = doc.get("rows")
    if not isinstance(rows, list):
        raise KdxError(f"{path}: 'rows' must be a list; re-export the bundle.")
    return [CFootprint.from_dict(row) for row in rows]


def footprint_line(row: CFootprint) -> str:
    """One log line: ``stm32f4 student agent_0 (int8): flash 6,120 / 16,384 B, RAM 980 / 4,096 B, measured``."""

    def of(n: int, cap: int | None) -> str:
        return f"{n:,} B" if cap is None else f"{n:,} / {cap:,} B"

    verdict = "" if row.fits else "  OVER BUDGET"
    how = row.basis + (f" ({row.note})" if row.note else "")
    return (f"{row.profile} {row.role} {row.agent} ({row.precision}): flash {of(row.flash_bytes, row.max_flash_bytes)}, "
            f"RAM {of(row.ram_bytes, row.max_ram_bytes)}, {how}{verdict}")


def record_footprints(bundle_dir: Path, entries: Sequence[AgentEntry], target: str | None,
                      log: Callable[[str], None]) -> FileEntry:
    """What ``kdx export`` does for a C bundle: measure or estimate every policy on the profiles
    of ``target`` (:func:`footprint_profiles`), write ``c/footprint.json``, log one line per row,
    and return the file's manifest entry (kind ``json``)."""
    profiles = footprint_profiles(target or "")
    rows = bundle_footprints(bundle_dir, entries, profiles)
    for row in rows:
        log(f"footprint: {footprint_line(row)}")
    write_footprint_json(bundle_dir, rows)
    return FileEntry.of_file(bundle_dir, FOOTPRINT_NAME, "json")
