"""``python -m tac_pipeline.cli``: see :mod:`tac_pipeline.cli.commands`.

The command stops when its parent (``make``, a shell, a supervisor) dies, and it leaves without the
interpreter's teardown once its output is flushed (:mod:`tac_pipeline.runs.child`).
"""

from tac_pipeline.cli.commands import main
from tac_pipeline.runs.child import die_with_parent, exit_now

if __name__ == "__main__":
    die_with_parent()
    exit_now(main())
