"""Human-readable figures shared by the CLI, the cost report and the diagrams.

Takes: counts and byte sizes. Produces: strings such as ``28.29 M``, ``8.98 GFLOP``,
``150 KiB``, and parses budgets such as ``16GiB``. No dependencies.
"""

from __future__ import annotations

import re


def human_count(n: float, unit: str = "", sep: str = " ") -> str:
    """``28288354`` -> ``28.29 M``; ``sep=""`` gives the compact ``28.29M``."""
    for suffix, div in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{sep}{suffix}{unit}"
    return f"{int(n)}{sep}{unit}".rstrip()


def human_bytes(n: float) -> str:
    """Binary units: ``153664`` -> ``150.06 KiB``, ``2**30`` -> ``1 GiB``."""
    for suffix, div in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= div:
            v = n / div
            return f"{v:.0f} {suffix}" if v == int(v) else f"{v:.2f} {suffix}"
    return f"{int(n)} B"


_UNITS = {"B": 1, "K": 1e3, "KB": 1e3, "M": 1e6, "MB": 1e6, "G": 1e9, "GB": 1e9, "T": 1e12, "TB": 1e12,
          "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def parse_bytes(text: str) -> int | None:
    """``16GiB``, ``512MB``, ``1.5GB``, ``100B`` -> bytes; ``None`` when ``text`` is not a size.

    The unit is required: ``16`` alone could mean bytes or gigabytes, so it is not a size."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)\s*([KMGT]i?B?|B)\s*", text[:100])
    if not m or len(text) > 100:
        return None
    try:
        n = float(m.group(1)) * _UNITS[m.group(2)]
    except (ValueError, OverflowError):
        return None
    return int(n) if 1 <= n < 2**80 else None


def size_error(text: str) -> str:
    """Why ``text`` is not a size, with the fix."""
    shown = text if len(text) <= 40 else text[:37] + "..."
    if re.fullmatch(r"\s*[0-9.eE+-]+\s*", text[:100]):
        return f"`{shown}` has no unit; write e.g. {shown.strip()}GiB (units: B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
    return f"cannot read `{shown}` as a size; write e.g. 16GiB or 512MB"
