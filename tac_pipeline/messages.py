"""How error messages list many things: the first few, then how many more."""

from __future__ import annotations

from collections.abc import Iterable


def listed(items: Iterable[object], limit: int = 5) -> str:
    """``"a, b, c"``, or ``"a, b, c, d, e and 7 more"`` beyond ``limit`` items (numpy ints print as ints)."""
    items = [int(i) if hasattr(i, "__index__") and not isinstance(i, bool) else i for i in items]
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
