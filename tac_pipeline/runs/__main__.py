"""``make ui``: prepare the instance and report dead runs before the UI starts."""

from tac_pipeline.runs.dead import mark_dead_runs_failed
from tac_pipeline.runs.home import missing_partition_limit, open_instance, say

if __name__ == "__main__":
    with open_instance() as instance:
        mark_dead_runs_failed(instance, say=say)
        problem = missing_partition_limit(instance)
    if problem:
        say(f"warning: {problem}")
