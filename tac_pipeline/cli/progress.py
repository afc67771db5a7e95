"""What the terminal shows while a run works: one line per finished step, a progress bar during long steps.

:class:`RunFollower` reads the run's events from the instance as they are recorded (the run itself executes in
the child process, :mod:`tac_pipeline.cli.launch`) and prints, for each step that finishes::

    image_embeddings 2.1 s: 1,797 images, 1 encoded, 3 skipped

with the step's key figure taken from what its materialization recorded (:data:`KEY_FIGURES`). While a long
step runs (embedding images or nouns, training the heads) a ``tqdm`` bar follows the progress the step writes
to its log ("decoded 512/1,797 images", "embedded 20,000/119,034 nouns", "epoch 3/20"); the bar is drawn only
on a terminal. A failing step's message is printed as soon as it fails.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any, TextIO

#: Each asset's key figure: (metadata entry, how it reads); the first entries that the materialization has.
KEY_FIGURES: dict[str, tuple[tuple[str, str], ...]] = {
    "image_embeddings": (("images", "{:,} images"), ("encoded", "{:,} encoded"), ("skipped", "{:,} skipped")),
    "wordnet_noun_embeddings": (("nouns", "{:,} nouns"), ("vocabulary", "vocabulary {}")),
    "semantic_centers": (("n_centers", "{} semantic centres"), ("empty_centers", "{} empty")),
    "text_space": (("nouns_selected", "{:,} nouns selected"), ("nouns_source", "from {}")),
    "counterparts": (("dagster/row_count", "{:,} counterparts"), ("n_clusters", "K = {} chosen")),
    "knn_graphs": (("n_neighbors", "{} neighbours per image"),),
    "trained_heads": (("epochs", "{} epochs"), ("training_seconds", "{} s of training"), ("device", "on {}")),
    "cluster_labels": (("n_clusters", "{} clusters"), ("empty_clusters", "{} empty")),
    "metrics": (("scored_images", "{:,} images scored"),),
}
#: Progress a step writes to its log: "<done>/<total> <images|nouns>", or "epoch <done>/<total>".
_PROGRESS = re.compile(
    r"(?:epoch (?P<epoch>[\d,]+)/(?P<epochs>[\d,]+))|(?P<done>[\d,]+)/(?P<total>[\d,]+) (?P<unit>images|nouns)"
)


def key_figure(asset: str, metadata: dict[str, Any]) -> str:
    """The figures a person reads after a step: ``"1,797 images, 1 encoded, 3 skipped"``."""
    parts = []
    for entry, form in KEY_FIGURES.get(asset, (("dagster/row_count", "{:,} rows"),)):
        value = metadata.get(entry)
        if value is None or isinstance(value, dict | list):
            continue
        try:
            parts.append(form.format(value))
        except (ValueError, TypeError):
            parts.append(f"{entry} {value}")
    return ", ".join(parts)


def failure_detail(event, fallback: str) -> str:
    """A failed step's own error text: the user's exception that Dagster wrapped, else Dagster's error."""
    error = event.step_failure_data.error if event.step_failure_data else None
    if error is None:
        return fallback
    return (error.cause or error).message.strip()


def parse_progress(message: str) -> tuple[int, int, str] | None:
    """``(done, total, unit)`` from a step's progress message, or None."""
    found = _PROGRESS.search(message)
    if found is None:
        return None
    if found["epoch"] is not None:
        return int(found["epoch"].replace(",", "")), int(found["epochs"].replace(",", "")), "epochs"
    return int(found["done"].replace(",", "")), int(found["total"].replace(",", "")), found["unit"]


class RunFollower:
    """Prints a run's finished steps, its failures and its progress, from the instance's event log."""

    def __init__(self, instance, find_run: Callable[[], str | None], out: TextIO | None = None) -> None:
        self._instance, self._find_run, self._out = instance, find_run, out or sys.stdout
        self._run_id: str | None = None
        self._cursor: str | None = None
        self._metadata: dict[str, dict[str, Any]] = {}
        self._bars: dict[str, Any] = {}
        self.failures: list[str] = []

    @property
    def run_id(self) -> str | None:
        return self._run_id

    def poll(self) -> None:
        """Print what the run recorded since the last call."""
        if self._run_id is None:
            self._run_id = self._find_run()
            if self._run_id is None:
                return
        while True:
            connection = self._instance.get_records_for_run(self._run_id, cursor=self._cursor, limit=500)
            for record in connection.records:
                self._show(record.event_log_entry)
            self._cursor = connection.cursor
            if not connection.has_more:
                return

    def close(self) -> None:
        self.poll()
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()

    def _show(self, entry) -> None:
        event = entry.dagster_event
        if event is None:  # a step's own log line: progress, when it reports some
            self._progress(entry.step_key, entry.user_message or "")
            return
        step = event.step_key
        if event.is_step_materialization:
            materialization = event.step_materialization_data.materialization
            values = {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
            self._metadata[materialization.asset_key.to_user_string()] = values
        elif event.is_step_success and step is not None:
            self._close_bar(step)
            seconds = event.event_specific_data.duration_ms / 1000.0
            figure = key_figure(step, self._metadata.get(step, {}))
            self._print(f"{step} {seconds:.1f} s" + (f": {figure}" if figure else ""))
        elif event.is_step_failure and step is not None:
            self._close_bar(step)
            detail = failure_detail(event, entry.user_message)
            self.failures.append(f"step {step} failed: {detail}")
            self._print(f"{step} failed: {detail}", stream=sys.stderr)

    def _progress(self, step: str | None, message: str) -> None:
        found = parse_progress(message) if step else None
        if found is None or not getattr(self._out, "isatty", lambda: False)():
            return
        done, total, unit = found
        bar = self._bars.get(step)
        if bar is None:
            from tqdm import tqdm

            bar = self._bars[step] = tqdm(
                total=total, desc=step, unit=f" {unit}", file=self._out, leave=False
            )
        bar.total = total
        bar.n = min(done, total)
        bar.refresh()

    def _close_bar(self, step: str) -> None:
        bar = self._bars.pop(step, None)
        if bar is not None:
            bar.close()

    def _print(self, line: str, stream: TextIO | None = None) -> None:
        stream = stream or self._out
        print(line, file=stream, flush=True)
