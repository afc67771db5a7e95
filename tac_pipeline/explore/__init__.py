"""Seeing and using a clustered drop outside Dagster: exports a person takes elsewhere (:mod:`.export`) and the
FiftyOne dataset behind ``make explore`` (:mod:`.fiftyone_dataset`, :func:`to_fiftyone` for notebooks).

Everything here reads what the store holds, through the paths the latest materializations recorded; nothing
is recomputed and neither the drop nor the store is written. FiftyOne is an optional extra
(``pip install -e '.[explore]'``), imported only when a FiftyOne dataset is built.
"""

from __future__ import annotations

from typing import Any

__all__ = ["to_fiftyone"]


def __getattr__(name: str) -> Any:
    if name == "to_fiftyone":
        from tac_pipeline.explore.fiftyone_dataset import to_fiftyone

        return to_fiftyone
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
