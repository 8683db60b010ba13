"""The ``featclf`` command: ``models``, ``train``, ``extract``, ``store``, ``compare``, ``predict``.

Each subcommand lives in its own module here, exposing ``add_parser(subparsers)`` which
registers its arguments and sets ``func`` to the function that runs it and returns an exit code.
Building the parser imports every command module, so those modules import torch, torchvision
and scikit-learn only inside their run functions: ``featclf --help`` and ``featclf store ...``
then start in a fraction of a second instead of the seconds ``import torch`` takes.

Exit codes follow the Unix conventions:

* 0: success;
* 1: a runtime failure (an unreadable file, missing weights, a damaged store): featclf's own
  errors, which are ``ValueError`` or ``OSError``, are printed as
  ``featclf <command>: error: <message>`` without a traceback;
* 2: a usage error: argparse's own, or a flag's value refused by an estimator's parameter
  check (scikit-learn's ``InvalidParameterError`` naming a parameter that is a flag);
* 130: interrupted (Ctrl-C); work already written (store shards, checkpoints) is kept;
* 141: the reader of the output went away (``featclf store info S | head -1``): the rest of
  the output is dropped quietly, as a command killed by ``SIGPIPE`` would (128 + 13).

Examples
--------
>>> parser = build_parser()
>>> args = parser.parse_args(["store", "info", "some/store"])
>>> args.command, args.action, args.store
('store', 'info', 'some/store')
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

from featclf import __version__
from featclf.errors import cli_messages

COMMANDS = ("models", "train", "extract", "store", "compare", "predict")

#: Exit codes of :func:`main`.
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 0, 1, 2, 130, 141


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``featclf`` command.

    Returns
    -------
    argparse.ArgumentParser
        With one subparser per command of :data:`COMMANDS` whose module exists.

    Examples
    --------
    >>> build_parser().prog
    'featclf'
    """
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


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _command_parser(parser: argparse.ArgumentParser,
                    args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)parser that parsed the command: ``featclf extract``, ``featclf store info``."""
    chosen = parser
    for dest in ("command", "action"):
        sub = _subparsers(chosen).get(getattr(args, dest, None))
        if sub is None:
            break
        chosen = sub
    return chosen


def _flag_of(exc: BaseException, parser: argparse.ArgumentParser) -> str | None:
    """The command-line flag whose value ``exc`` refuses, when it is a parameter check's error.

    scikit-learn's ``InvalidParameterError`` (what :func:`featclf.params.check_params` raises)
    names the parameter ("The 'epochs' parameter of SoftmaxClassifier must be ..."); the
    command's flags are its parameter names with dashes, so a named parameter that is one of
    the command's flags is a usage error. Whatever scikit-learn never imported cannot have
    raised it: no import here (it would cost a second on every failure).
    """
    validation = sys.modules.get("sklearn.utils._param_validation")
    if validation is None or not isinstance(exc, validation.InvalidParameterError):
        return None
    match = re.match(r"The '(\w+)' parameter", str(exc))
    if match is None:
        return None
    flag = "--" + match.group(1).replace("_", "-")
    flags = {s for action in parser._actions for s in action.option_strings}
    return flag if flag in flags else None


def _drop_stdout() -> None:
    """Point stdout at the null device, so that the interpreter's final flush is quiet.

    The recipe of the Python documentation (signal module, "Note on SIGPIPE").
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor (replaced in-process)
        pass


def _flushed(code: int) -> int:
    """``code``, once stdout is flushed; :data:`EXIT_BROKEN_PIPE` if its reader went away."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _drop_stdout()
        return EXIT_BROKEN_PIPE
    return code


def main(argv: list[str] | None = None) -> int:
    """Run the ``featclf`` command; returns the exit code.

    Parameters
    ----------
    argv : list of str, optional
        The arguments; ``sys.argv[1:]`` when None.

    Returns
    -------
    int
        0 on success, 1 for a runtime failure, 2 for a usage error, 130 when interrupted, 141
        when the output's reader went away (see the module's documentation).

    Examples
    --------
    >>> main(["store", "info", "/no/such/store"])  # the error goes to stderr
    1
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (argparse printed it)
        return _flushed(exc.code if isinstance(exc.code, int) else EXIT_USAGE)
    command = _command_parser(parser, args)
    try:
        # Library hints ("pass on_error='skip'") name the command's flags ("--on-error skip").
        with cli_messages():
            code = int(args.func(args) or 0)
        sys.stdout.flush()  # inside the try: a closed pipe often shows only at the flush
        return code
    except KeyboardInterrupt:
        print(f"\n{command.prog}: interrupted; work already written is kept", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _drop_stdout()
        return EXIT_BROKEN_PIPE
    except (ValueError, OSError) as exc:
        flag = _flag_of(exc, command)
        if flag is not None:
            command.print_usage(sys.stderr)
            print(f"{command.prog}: error: argument {flag}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        print(f"{command.prog}: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":  # python -m featclf.cli
    sys.exit(main())
