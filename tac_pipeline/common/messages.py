"""What messages print: lists cut to the first few, then how many more; the metrics as Markdown."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

#: How many skipped files a message lists before it points at the full report.
SHOWN_SKIPPED = 20


def listed(items: Iterable[object], limit: int = 5) -> str:
    """``"a, b, c"``, or ``"a, b, c, d, e and 7 more"`` beyond ``limit`` items (numpy ints print as ints)."""
    items = [int(i) if hasattr(i, "__index__") and not isinstance(i, bool) else i for i in items]
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def listed_lines(lines: Sequence[str], limit: int, indent: str = "") -> list[str]:
    """The first ``limit`` lines, indented, then ``"… and N more"`` when there are more."""
    shown = [f"{indent}{line}" for line in lines[:limit]]
    return shown + ([f"{indent}… and {len(lines) - limit} more"] if len(lines) > limit else [])


def more_row(total: int, shown: int, what: str = "", columns: int = 2) -> list[str]:
    """The last row of a Markdown table cut at ``shown`` rows: ``| … | N more <what> |`` (padded to
    ``columns`` cells), or no row when nothing was cut."""
    if total <= shown:
        return []
    label = f"{total - shown} more" + (f" {what}" if what else "")
    return ["| … | " + label + " |" + " |" * (columns - 2)]


def metrics_markdown(table) -> str:
    """The ``metrics`` table (pyarrow) as Markdown: the UI's metadata and what ``make cluster`` prints."""
    lines = [
        "| method | NMI | ACC | ARI | balance | images | split |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in table.to_pylist():
        cells = ["–" if row[k] is None else f"{row[k]:.1f}" for k in ("nmi", "acc", "ari")]
        lines.append(
            f"| {row['method']} | {' | '.join(cells)} | {row['cluster_size_ratio']:.2f} | {row['n_images']} | {row['split']} |"
        )
    return "\n".join(lines)
