"""The device profile registry: every ``profiles/*.toml`` shipped with kdx, loaded once.

``PROFILES`` maps a profile name (``jetson-orin-nano``, ``rpi5``, ...) to its
:class:`~kdx.devices.profile.DeviceProfile`. ``get_profile`` also accepts a path to a user's
own ``.toml`` file with the same schema, for boards kdx does not ship. Torch-free.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path

from kdx.devices.profile import DeviceProfile, load_profile_file, load_profile_text
from kdx.errors import KdxError


def _load_shipped_profiles() -> dict[str, DeviceProfile]:
    folder = resources.files("kdx.devices").joinpath("profiles")
    profiles: dict[str, DeviceProfile] = {}
    entries = sorted((e for e in folder.iterdir() if e.name.endswith(".toml")), key=lambda e: e.name)
    for entry in entries:
        stem = entry.name[: -len(".toml")]
        profiles[stem] = load_profile_text(
            entry.read_text(encoding="utf-8"), where=f"kdx/devices/profiles/{entry.name}", expected_name=stem
        )
    return profiles


PROFILES: dict[str, DeviceProfile] = _load_shipped_profiles()


def profile_names() -> tuple[str, ...]:
    """Names of the shipped profiles, sorted."""
    return tuple(PROFILES)


def get_profile(name: str) -> DeviceProfile:
    """Return the shipped profile ``name``, or load ``name`` as a path to a profile ``.toml`` file.

    An unknown name raises :class:`KdxError` listing the profiles (and the closest match).
    """
    if name in PROFILES:
        return PROFILES[name]
    if name.endswith(".toml"):
        if not Path(name).is_file():
            raise KdxError(f"device profile file {name} does not exist.")
        return load_profile_file(name)
    close = difflib.get_close_matches(name, PROFILES, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise KdxError(
        f"unknown device profile {name!r}.{hint} Known profiles: {', '.join(PROFILES)} "
        f"(or pass a path to your own profile .toml; see `kdx devices list`)."
    )
