"""Command line behind `make demo` and `make cluster`."""

from __future__ import annotations

import argparse
import sys

from tac_pipeline.demo_data import write_digits_drop
from tac_pipeline.partitions import drop_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tac_pipeline.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="write the digits drop and cluster it")
    demo.add_argument("--model", default=None)
    demo.add_argument("--pretrained", default=None)
    args = parser.parse_args(argv)
    if args.command == "demo":
        target = drop_path("digits")
        count = write_digits_drop(target)
        print(f"Wrote {count} digit images to {target}.")
        print("The asset graph that clusters them is not built yet; this demo stops after set-up.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
