"""The ``featclf`` command: ``models``, ``train``, ``extract``, ``store``, ``compare``.

Each subcommand lives in its own module here, exposing ``add_parser(subparsers)`` which
registers its arguments and sets ``func`` to the function that runs it and returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from featclf import __version__

COMMANDS = ("models", "train", "extract", "store", "compare")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``featclf`` command."""
    parser = argparse.ArgumentParser(
        prog="featclf",
        description="Classify images with deep features: extract CNN features, cache them, "
        "and compare SVM/logistic classifiers with end-to-end softmax training.")
    parser.add_argument("--version", action="version", version=f"featclf {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"featclf.cli.{name}_cmd")
        except ModuleNotFoundError as exc:
            if exc.name != f"featclf.cli.{name}_cmd":
                raise
            continue  # a command still being written is left out
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``featclf`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; work already written is kept", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"featclf {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # python -m featclf.cli
    sys.exit(main())
