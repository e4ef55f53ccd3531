"""What each stored format is called, how its objects are named and which levels it takes.

The one definition of these facts: the ``compression`` setting, the dump
names in ``manifest``, the codecs in ``codec`` and the benchmark all read
them from here. Plain data with no imports beyond the standard library, so
commands that only list or name snapshots do not load a compression library.
"""

from __future__ import annotations

from dataclasses import dataclass

from snapmgr.errors import ConfigError


@dataclass(frozen=True)
class Compression:
    """One stored format: the dump's name suffix and, if it compresses, its levels."""

    name: str
    suffix: str
    default_level: int | None = None
    #: Lowest and highest level accepted; ``None`` for a format without levels.
    levels: tuple[int, int] | None = None


GZIP = Compression("gzip", ".sql.gz", default_level=2, levels=(0, 3))  # isal's levels
ZSTD = Compression("zstd", ".sql.zst", default_level=3, levels=(1, 22))
NONE = Compression("none", ".sql")
COMPRESSIONS: dict[str, Compression] = {c.name: c for c in (GZIP, ZSTD, NONE)}
DEFAULT_COMPRESSION = GZIP.name
#: The one encryption scheme, as the manifest names it, and the suffix it adds
#: to the dump's name (``<id>.sql.gz.age``).
ENCRYPTION = "age"
ENCRYPTED_SUFFIX = ".age"


def compression(name: str) -> Compression:
    """The format called ``name``, or a config error listing the known ones."""
    try:
        return COMPRESSIONS[name]
    except KeyError:
        raise ConfigError(
            f"compression: unknown value {name!r} (choose one of {', '.join(COMPRESSIONS)})"
        ) from None


def check_level(name: str, level: int | None) -> int | None:
    """The effective level for compression ``name``: its default when ``level`` is
    ``None``, always ``None`` for a format without levels; else a config error."""
    chosen = compression(name)
    if chosen.levels is None:
        return None
    if level is None:
        return chosen.default_level
    low, high = chosen.levels
    if not low <= level <= high:
        raise ConfigError(f"compression_level: {name} takes {low} to {high}, not {level}")
    return level
