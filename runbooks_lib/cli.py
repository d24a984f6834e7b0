"""The ``runbooks`` command line: ``runbooks list|params|run`` (runbooks) and ``runbooks lab ...``."""

from __future__ import annotations

import argparse
import sys

from runbooks_lib.errors import RunbookError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runbooks", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from runbooks_lib.lab import cli as lab_cli

    lab_cli.register(sub)
    from runbooks_lib import runner

    runner.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except RunbookError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
