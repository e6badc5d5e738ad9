"""Every failure copgen-rt expects, under one root. Each class carries the command line's exit code
and its message is one line; `exit_code` and `one_line` also map the few built-in exceptions that
mean the same things, so no caller maps anything by hand.

Exit codes (documented in docs/cli.md): 3 bad input, 4 checkpoint, 5 output exists, 6 missing
dependency, 7 export, 8 some scenes of many failed, 9 cannot write, 10 busy, 11 the Ray cluster
was lost, 1 internal error, 130/143 interrupted/terminated. Imports nothing of the project, so
every module may raise these.
"""

from __future__ import annotations

EXIT_INTERNAL = 1
EXIT_INPUT = 3
EXIT_CHECKPOINT = 4
EXIT_OUTPUT_EXISTS = 5
EXIT_MISSING = 6
EXIT_EXPORT = 7
EXIT_SCENES_FAILED = 8  # many scenes: at least one failed (the others ran)
EXIT_CANNOT_WRITE = 9  # an output folder is not writable, the disk is full, a planted link was refused
EXIT_BUSY = 10  # another run is writing the same scene's outputs right now
EXIT_CLUSTER_LOST = 11  # --ray: the head, or the driver's connection to it, is gone

ONE_LINE_LIMIT = 160  # characters of a wrapped library message kept in one of ours


class CopgenError(Exception):
    """The root: an expected failure with a one-line message."""

    exit_code = EXIT_INTERNAL


class InputError(CopgenError, ValueError):
    """Options or input data that cannot be used as given."""

    exit_code = EXIT_INPUT


class SceneError(InputError):
    """An input raster cannot be used as given."""


class MaskError(InputError):
    """A gap mask cannot be used as given."""


class UnknownModalityError(KeyError, InputError):
    """A modality name the spec does not have (a KeyError for lookups, a ValueError for callers)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class CheckpointError(CopgenError):
    """A checkpoint is missing, unreadable, or does not fit the spec."""

    exit_code = EXIT_CHECKPOINT


class OutputExistsError(CopgenError):
    """An output exists and --overwrite was not given."""

    exit_code = EXIT_OUTPUT_EXISTS


class MissingDependencyError(CopgenError, ImportError):
    """An optional library the requested engine or format needs is not installed."""

    exit_code = EXIT_MISSING


class ExportError(CopgenError):
    """An export is invalid or does not match the torch component."""

    exit_code = EXIT_EXPORT


class TensorRTIncompatible(ExportError):
    """A graph uses an operator or form TensorRT does not build."""


class OutputWriteError(CopgenError):
    """An output cannot be written: the folder is not writable, the disk is full, a link was planted."""

    exit_code = EXIT_CANNOT_WRITE


class OutputBusyError(CopgenError):
    """Another run is writing the same outputs right now."""

    exit_code = EXIT_BUSY


class ClusterLostError(CopgenError):
    """The Ray cluster (its head, or this driver's connection to it) is gone mid-run."""

    exit_code = EXIT_CLUSTER_LOST


class LeaseLostError(CopgenError):
    """A Ray worker may not publish: the driver that holds the run's locks is gone."""

    exit_code = EXIT_CLUSTER_LOST


def first_line(e: BaseException, limit: int = ONE_LINE_LIMIT) -> str:
    """The first line of an exception's message (a KeyError's key unquoted), else its class name."""
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    lines = text.strip().splitlines()
    return lines[0][:limit] if lines else type(e).__name__


def exit_code(e: BaseException) -> int:
    """The command line's exit code for `e`: its own, or that of the built-in it stands for."""
    if isinstance(e, CopgenError):
        return e.exit_code
    if isinstance(e, FileExistsError):
        return EXIT_OUTPUT_EXISTS
    if isinstance(e, ValueError | KeyError | FileNotFoundError | IsADirectoryError | PermissionError):
        return EXIT_INPUT
    if isinstance(e, ImportError):
        return EXIT_MISSING
    return EXIT_INTERNAL


def one_line(e: BaseException) -> str:
    """What a user reads: our messages and the built-ins mapped by `exit_code` as they are; an
    unexpected exception with its class name (an internal error)."""
    if isinstance(e, MemoryError):
        return "out of memory: lower --batch-size"
    if exit_code(e) != EXIT_INTERNAL or isinstance(e, CopgenError | OSError):
        return first_line(e, limit=10_000)
    text = first_line(e, limit=10_000)
    return f"{type(e).__name__}: {text}" if text != type(e).__name__ else text


def command_line_report(e: BaseException) -> tuple[int, str]:
    """(exit code, the line after "copgen-rt: error: ") of a command that failed with `e`."""
    code, line = exit_code(e), one_line(e)
    if code == EXIT_INTERNAL and not isinstance(e, MemoryError | CopgenError):
        line = f"internal error: {line} (set COPGEN_RT_DEBUG=1 for a traceback)"
    return code, line
