"""The `t2arec` command. Each command group lives in its own module with `register(subparsers)`; the CLI only parses
arguments and calls the Python API. Errors the user can fix print one line and exit 2, with no traceback."""
from __future__ import annotations

import argparse
import importlib
import sys

from .common import user_error_types

# the modules under t2arec_fast.cli that provide register(subparsers), in the order `t2arec --help` lists them
COMMAND_MODULES = ("data_cmd", "demo_cmd", "train_cmd", "export_cmd", "serve_cmd")


def build_parser() -> argparse.ArgumentParser:
    from t2arec_fast import __version__
    parser = argparse.ArgumentParser(prog="t2arec", description="T2ARec: train, adapt at test time, evaluate, "
                                     "export to ONNX and serve a state-space sequential recommender.")
    parser.add_argument("--version", action="version", version=f"t2arec_fast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"t2arec_fast.cli.{name}").register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
