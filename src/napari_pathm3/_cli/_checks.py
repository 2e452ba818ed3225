"""Option types that check a value where argparse parses it: a number out of range, NaN/Inf or a device this
machine lacks is an argument error naming the option (``argument --batch-size: must be an integer in
[1, 4096], got '0'``) before any work starts, never a failure per slide or an internal error later.

The bounds are sane upper limits, far above any real use, low enough that a typo cannot start 100,000
workers or ask for terabytes. Parsing goes through :func:`napari_pathm3.schemas.bounded` (pydantic), the same
check the environment variables get.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def number(
    kind: type = int,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Callable[[str], Any]:
    """An argparse ``type=`` that parses a finite ``kind`` within the bounds."""

    def parse(text: str) -> Any:
        from ..schemas import bounded

        try:
            return bounded(text, name="", kind=kind, ge=ge, gt=gt, le=le, lt=lt)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = kind.__name__
    parse.bounds = (kind, ge, gt, le, lt)  # type: ignore[attr-defined]  # read by the fuzz tests
    return parse


def device(text: str) -> str:
    """``--device``: auto, cpu, cuda, cuda:N or mps, checked against this machine and torch build."""
    from ..device import check_device
    from ..errors import DeviceError

    try:
        return check_device(text)
    except DeviceError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_device(p: argparse.ArgumentParser) -> None:
    """The one ``--device`` option of every command that runs a model."""
    p.add_argument(
        "--device",
        default="auto",
        type=device,
        metavar="DEV",
        help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps (default: %(default)s)",
    )


MPP = number(float, gt=0, le=1000)  # µm/px: 1 mm per pixel is beyond any slide
FRACTION = number(float, ge=0, le=1)
PATCH_SIZE = number(int, ge=8, le=4096)
LEVEL = number(int, ge=0, le=64)
BATCH = number(int, ge=1, le=4096)
THREADS = number(int, ge=1, le=1024)
WORKERS = number(int, ge=1, le=256)
BEAMS = number(int, ge=1, le=64)
TOP_K = number(int, ge=1, le=100_000)
IMAGE_SIDE = number(int, ge=16, le=16_384)
EPOCHS = number(int, ge=1, le=100_000)
STEPS = number(int, ge=1, le=1024)
COUNT = number(int, ge=0, le=100_000)
MAX_PATCHES = number(int, ge=1, le=10_000_000)
LR = number(float, gt=0, le=10)
VAL_FRACTION = number(float, ge=0, lt=1)
SEED = number(int, ge=0, le=2**32 - 1)


class ListEncoders(argparse.Action):
    """``--list-encoders``: print the known and cached encoder names and exit (like ``--version``: before the
    command's required arguments are checked)."""

    def __init__(self, option_strings: list[str], dest: str, **kw: Any) -> None:
        kw.setdefault("help", "print known and cached encoder names and exit")
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kw)

    def __call__(self, parser: argparse.ArgumentParser, *a: Any, **k: Any) -> None:
        from .. import api

        print("\n".join(api.encoder_names()))
        parser.exit()
