"""The command line's errors and warnings, one line each: a distinct exit code for every
expected failure (documented in the README), click's usage errors in the same form, no
tracebacks unless COPGEN_RT_DEBUG=1 or --debug."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar, cast

import click

from copgen_rt.errors import EXIT_ENVIRONMENT, EXIT_INTERNAL, command_line_report, escaped
from copgen_rt.signals import exit_if_interrupted

F = TypeVar("F", bound=Callable[..., Any])


def fail(code: int, message: str) -> NoReturn:
    """Exit with `code` after one error line, whatever the message holds (a newline in a path is
    escaped), or as the signal that came first says."""
    exit_if_interrupted()
    click.echo(f"copgen-rt: error: {escaped(message)}", err=True)
    sys.exit(code)


def friendly_errors(fn: F) -> F:
    """One line and a distinct exit code for every expected failure; no tracebacks."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            fail(130, "interrupted")
        except Exception as e:  # noqa: BLE001 - every failure is one line; the error tree maps it
            if isinstance(e, OSError) and _stdout_broken(e):
                fail(EXIT_ENVIRONMENT, f"cannot write to standard output ({e.strerror or e}); "
                                       "files the command made were written before this")
            code, line = command_line_report(e)
            if code == EXIT_INTERNAL and ("--debug" in sys.argv or os.environ.get("COPGEN_RT_DEBUG") == "1"):
                raise
            fail(code, line)

    return cast(F, wrapper)


def _stdout_broken(e: OSError) -> bool:
    """Whether `e` came from printing to standard output (click.echo, the commands' one channel
    for it: on a full device, a closed pipe); if so, what is left in its buffer goes to
    /dev/null, so that exiting does not fail on it again."""
    tb = e.__traceback__
    while tb is not None and not (tb.tb_frame.f_code.co_name == "echo"
                                  and tb.tb_frame.f_globals.get("__name__") == "click.utils"):
        tb = tb.tb_next
    if tb is None or sys.stdout is None or tb.tb_frame.f_locals.get("err"):
        return False
    with contextlib.suppress(OSError, ValueError):  # no descriptor: a test's captured output
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return True


def require_stdout() -> None:
    """A closed standard output (`>&-`) would swallow what a command prints, its results and
    `info`'s whole answer: refused before any work."""
    if sys.stdout is None:
        fail(EXIT_ENVIRONMENT, "standard output is closed (>&-): what the command prints would be lost; "
                               "redirect it to a file or /dev/null instead")


class OneLineUsageErrors(click.Group):
    """click's usage errors (unknown option, bad value) as one line, like every other error."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as e:
            click.echo(e.ctx.get_help(), err=True)
            sys.exit(e.exit_code)
        except click.UsageError as e:
            where = e.ctx.command_path if e.ctx else "copgen-rt"
            fail(e.exit_code, f"{e.format_message()} (see '{where} --help')")
        except click.ClickException as e:
            fail(e.exit_code, e.format_message())
        except click.Abort:
            fail(130, "interrupted")
        sys.exit(code if isinstance(code, int) else 0)


def one_line_messages() -> None:
    """Warnings as one line each; no raw log lines of GDAL next to the one-line errors."""
    from copgen_rt.weights import RandomWeightsWarning

    warnings.simplefilter("default")
    # GDAL's messages reach us as exceptions, each turned into one line; its log lines would
    # print raw (e.g. "_tiffSeekProc" on a full disk) next to them
    logging.getLogger("rasterio").addHandler(logging.NullHandler())
    logging.getLogger("rasterio").propagate = False
    os.environ.setdefault("CPL_LOG", os.devnull)  # GDAL's default handler, outside rasterio's calls
    # a raster without georeferencing is refused with its own one-line error
    warnings.filterwarnings("ignore", message="Dataset has no geotransform")
    # the API's RandomWeightsWarning: the commands print their own RANDOM WEIGHTS line
    warnings.filterwarnings("ignore", category=RandomWeightsWarning)
    # what torch says of its own APIs to developers (torch.compile's imports), not to users
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch")
    warnings.showwarning = _show_warning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line each, written through tqdm so that a progress bar does not hide them."""
    from tqdm import tqdm

    text = str(message).strip().splitlines()[0] if str(message).strip() else ""
    tqdm.write(f"copgen-rt: warning: {category.__name__}: {text}", file=sys.stderr)
