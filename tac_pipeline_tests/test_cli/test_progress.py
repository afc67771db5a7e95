"""What the terminal shows while a run works: one line per finished step with its key figure, a progress bar
from the progress a step logs (on a terminal only), and a failing step's message."""

from __future__ import annotations

import io

import pyarrow as pa
from dagster import DagsterInstance, MaterializeResult, asset, materialize

from tac_pipeline.cli.progress import RunFollower, key_figure, parse_progress


def test_key_figures_read_as_a_person_reads_them():
    assert key_figure("image_embeddings", {"images": 1797, "encoded": 1, "skipped": 3}) == (
        "1,797 images, 1 encoded, 3 skipped"
    )
    assert key_figure("cluster_labels", {"n_clusters": 10, "empty_clusters": 0}) == "10 clusters, 0 empty"
    assert (
        key_figure("semantic_centers", {"n_centers": 30}) == "30 semantic centres"
    )  # what is missing is left out
    assert key_figure("something_else", {"dagster/row_count": 12345}) == "12,345 rows"
    assert (
        key_figure("metrics", {"scored_images": "n/a"}) == "scored_images n/a"
    )  # never a crash on odd values


def test_progress_is_read_from_the_steps_own_log_lines():
    assert parse_progress("decoded 512/1797 images (850 images/s), 0 skipped") == (512, 1797, "images")
    assert parse_progress("embedded 20,000/119,034 nouns") == (20000, 119034, "nouns")
    assert parse_progress("epoch 3/20: L 1.2 (0.1 s per epoch, about 2 s left)") == (3, 20, "epochs")
    assert parse_progress("Running on cuda:0 (locked after 0.0 s).") is None


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(instance, *assets, raise_on_error=True):
    return materialize(list(assets), instance=instance, raise_on_error=raise_on_error)


def test_the_follower_prints_one_line_per_step_a_bar_and_the_failure_first():
    @asset
    def image_embeddings(context):
        for done in (5, 10):
            context.log.info(f"decoded {done}/10 images (100 images/s), 0 skipped")
        return MaterializeResult(metadata={"images": 10, "encoded": 10, "skipped": 0})

    @asset
    def broken(context):
        raise ValueError("dataset 'x' asks for 12 clusters but has only 10 images: lower n_clusters")

    with DagsterInstance.ephemeral() as instance:
        run = _run(instance, image_embeddings)
        out = Terminal()
        follower = RunFollower(instance, lambda: run.run_id, out=out)
        follower.close()
        lines = [line for line in out.getvalue().replace("\r", "\n").splitlines() if line.strip()]
        assert any("10/10" in line and "images" in line for line in lines)  # the progress bar was drawn
        finished = [line for line in lines if line.startswith("image_embeddings ") and " s: " in line]
        assert len(finished) == 1 and finished[0].endswith(": 10 images, 10 encoded, 0 skipped")

        failed = _run(instance, broken, raise_on_error=False)
        plain = io.StringIO()  # not a terminal: no bar
        follower = RunFollower(instance, lambda: failed.run_id, out=plain)
        follower.poll()
        follower.poll()  # nothing twice
        follower.close()
        assert plain.getvalue() == ""
        [failure] = follower.failures
        assert failure.startswith("step broken failed: ") and failure.endswith(
            "asks for 12 clusters but has only 10 images: lower n_clusters"
        )


def test_the_follower_waits_for_the_run_to_exist():
    @asset
    def metrics():
        return pa.table({"x": [1]})

    with DagsterInstance.ephemeral() as instance:
        found: list[str | None] = [None]
        out = io.StringIO()
        follower = RunFollower(instance, lambda: found[0], out=out)
        follower.poll()  # no run yet: nothing, no error
        assert follower.run_id is None
        found[0] = _run(instance, metrics).run_id
        follower.close()
        assert follower.run_id == found[0] and out.getvalue().startswith("metrics ")
