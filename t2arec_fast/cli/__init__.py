"""The `t2arec` command. Each command group lives in its own module with `register(subparsers)`; the CLI only parses
arguments and calls the Python API. Errors the user can fix print one line and exit 2, with no traceback."""
from __future__ import annotations

import argparse
import importlib
import sys

from .common import split_overrides, user_error_types

# the modules under t2arec_fast.cli that provide register(subparsers), in the order `t2arec --help` lists them
COMMAND_MODULES = ("data_cmd", "demo_cmd", "train_cmd", "tune_cmd", "export_cmd", "serve_cmd")


def build_parser() -> argparse.ArgumentParser:
    """The `t2arec` parser with every command module's subcommands registered."""
    from t2arec_fast import __version__
    parser = argparse.ArgumentParser(prog="t2arec", description="T2ARec: train, adapt at test time, evaluate, "
                                     "export to ONNX and serve a state-space sequential recommender.")
    parser.add_argument("--version", action="version", version=f"t2arec_fast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"t2arec_fast.cli.{name}").register(sub)
    return parser


def command_parsers(parser: argparse.ArgumentParser) -> dict:
    """{command name: its parser} of `parser`'s sub-commands ({} when it has none): the top level of
    `build_parser()`, or a command with sub-commands of its own (`data`). argparse has no public accessor; this is
    the one place that reads its action list."""
    return next((action.choices for action in parser._actions if isinstance(action, argparse._SubParsersAction)), {})


def main(argv=None) -> int:
    """Run `t2arec` with argv (default sys.argv[1:]); → the exit code: 0, 1 (a run that produced no result), 2 (a
    user error, printed as one line), 130 (interrupted). argparse exits with 2 on a malformed command line."""
    parser = build_parser()
    args = parse_arguments(parser, sys.argv[1:] if argv is None else list(argv))
    try:
        return int(args.func(args) or 0)
    except user_error_types() as exc:
        print(f"t2arec {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `t2arec ... | head`: the reader left; not an error worth a traceback
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def parse_arguments(parser: argparse.ArgumentParser, argv: list) -> argparse.Namespace:
    """argparse, except that commands taking config settings (train, evaluate) accept any config key as
    `--key=value` or `--key value` anywhere on the line; those land in `args.overrides`."""
    commands = command_parsers(parser)
    at = next((i for i, token in enumerate(argv) if token in commands), None)
    overrides = []
    if at is not None and commands[argv[at]].get_default("accepts_overrides"):
        kept, overrides = split_overrides(commands[argv[at]], argv[at + 1:])
        argv = argv[:at + 1] + kept
    args = parser.parse_args(argv)
    args.overrides = overrides
    return args


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
