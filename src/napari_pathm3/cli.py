"""``napari-pathm3`` command line: extract, train, evaluate, caption, demo, info.

Each sub-command lives in ``napari_pathm3/_cli/<name>.py`` with ``register(subparsers)`` that adds its parser
and sets ``func``; heavy imports happen inside ``func`` so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

from . import __version__
from .errors import PathM3Error
from .threads import ENV_VAR, quiet_openmp

COMMANDS = ("info", "extract", "train", "evaluate", "score", "caption", "demo")
#: commands that name a patch encoder: each has --list-encoders
ENCODER_COMMANDS = ("extract", "caption", "train")

EXAMPLES = """examples:
  napari-pathm3 demo --headless --out pathm3-demo
  napari-pathm3 info slide.svs
  napari-pathm3 caption slide.svs --model demo --out result.json --heatmap heatmap.png
  napari-pathm3 COMMAND --help        # options and examples of one command
"""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``prog: error: message (see prog --help)``, exit status 2 (argparse
    prints the whole usage block first, which buries the line that says what is wrong)."""

    def error(self, message: str) -> NoReturn:
        text = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {text} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from ._cli._checks import THREADS, ListEncoders

    parser = _Parser(
        prog="napari-pathm3",
        description="PathM3 whole-slide classification and captioning (napari plugin command line).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"napari-pathm3 {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"napari_pathm3._cli.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"napari_pathm3._cli.{name}":
                raise
            continue
        module.register(sub)
        command = sub.choices[name]
        command.epilog = getattr(module, "EXAMPLES", None)
        command.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the examples' lines
        if name in ENCODER_COMMANDS and "--list-encoders" not in command._option_string_actions:
            command.add_argument("--list-encoders", action=ListEncoders)
    for command in sub.choices.values():  # one thread option on every command (see napari_pathm3.threads)
        # -v also after the command name; SUPPRESS keeps the top-level value when it is not repeated here
        command.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            default=argparse.SUPPRESS,
            help="log debug messages and show tracebacks",
        )
        command.add_argument(
            "--threads",
            default=None,
            type=_threads_option(THREADS),
            metavar="N",
            help=f"CPU threads to keep busy (default: free cores, or ${ENV_VAR}); 'auto' or 1-1024",
        )
    return parser


def _threads_option(parse: Any) -> Any:
    def threads(text: str) -> int | None:
        return None if text.strip().lower() in ("", "auto") else parse(text)

    threads.bounds = parse.bounds  # type: ignore[attr-defined]
    return threads


def _one_line_warning(
    message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    """``napari-pathm3: warning: message``: one line, no source file and line (those are for developers;
    ``-v`` shows Python's own format)."""
    text = " ".join(str(message).split())
    print(f"napari-pathm3: warning: {text}", file=file or sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    quiet_openmp()  # before torch is imported by any command
    parser = build_parser()
    args = parser.parse_args(argv)
    threads = getattr(args, "threads", None)
    if threads is not None:  # range-checked by its option type
        # torch-using code applies the policy itself (napari_pathm3.threads.apply_thread_policy reads this)
        os.environ[ENV_VAR] = str(threads)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not args.verbose:
        warnings.showwarning = _one_line_warning
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"napari-pathm3 {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # one line and a non-zero exit; the traceback only with -v
        if args.verbose:
            traceback.print_exc()
        print(
            f"napari-pathm3 {args.command}: error: {error_line(err, verbose=args.verbose)}", file=sys.stderr
        )
        return 1


def error_line(err: BaseException, *, verbose: bool = False) -> str:
    """One line for an error: ours carry their fix; OS errors name the file; anything else its type."""
    if isinstance(err, PathM3Error):
        text = str(err)
    elif isinstance(err, ValueError) and not isinstance(err, UnicodeError):
        text = str(err)  # settings validation: the message names the field (config.py, argument checks)
    elif isinstance(err, OSError):
        where = f"{err.filename}: " if err.filename else ""
        hint = {
            errno.ENOSPC: " (the disk is full: free space or write elsewhere)",
            errno.EDQUOT: " (disk quota exceeded: free space or write elsewhere)",
            errno.EACCES: " (no permission: pick another path)",
            errno.EROFS: " (read-only file system: write elsewhere)",
        }.get(err.errno or 0, "")
        text = f"{where}{err.strerror or err}{hint}"
    else:
        text = f"{type(err).__name__}: {err}"
        if not verbose:
            text += " (run with -v for the traceback)"
    return " ".join(text.split())  # one line, whatever the message held


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
