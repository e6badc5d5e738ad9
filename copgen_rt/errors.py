"""Every failure copgen-rt expects, under one root. Each class carries the command line's exit code
and its message is one line; `exit_code` and `one_line` also map the few built-in exceptions that
mean the same things, so no caller maps anything by hand.

Exit codes (documented in docs/cli.md): 3 bad input, 4 checkpoint, 5 output exists, 6 missing
dependency, 7 export, 8 some scenes of many failed, 9 the environment (cannot write, disk full,
not a folder, name too long, out of memory, standard output closed or full), 10 busy, 11 the Ray
cluster was lost, 1 internal error, 129/130/131/138/143 ended by a signal. Imports nothing of the
project, so every module may raise these.
"""

from __future__ import annotations

import errno

EXIT_INTERNAL = 1
EXIT_INPUT = 3
EXIT_CHECKPOINT = 4
EXIT_OUTPUT_EXISTS = 5
EXIT_MISSING = 6
EXIT_EXPORT = 7
EXIT_SCENES_FAILED = 8  # many scenes: at least one failed (the others ran)
EXIT_CANNOT_WRITE = 9  # an output folder is not writable, the disk is full, a planted link was refused
EXIT_ENVIRONMENT = EXIT_CANNOT_WRITE  # and whatever else the machine refused: memory, names, stdout
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
class EnvironmentFailure(CopgenError):
    """The machine refused: out of memory, standard output closed or full, a name too long."""

    exit_code = EXIT_ENVIRONMENT


# what engines (torch, ONNX Runtime, OpenVINO's std::bad_alloc, TensorRT) say when memory ran out
_OUT_OF_MEMORY_WORDS = ("bad_alloc", "out of memory", "can't allocate memory", "cannot allocate memory",
                        "failed to allocate memory", "failed to allocate", "allocation failed")


def out_of_memory(e: BaseException | None) -> bool:
    """Whether `e`, or what it was raised from, is running out of (host or device) memory."""
    while e is not None:
        if isinstance(e, MemoryError) or isinstance(e, OSError) and e.errno == errno.ENOMEM:
            return True
        if not isinstance(e, CopgenError) and any(w in str(e).lower() for w in _OUT_OF_MEMORY_WORDS):
            return True
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    return False


def escaped(text: str) -> str:
    """`text` on one line: newlines and other control characters (of a path, say) escaped."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def first_line(e: BaseException, limit: int = ONE_LINE_LIMIT) -> str:
    """The first line of an exception's message (a KeyError's key unquoted), else its class name."""
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    lines = text.strip().splitlines()
    return lines[0][:limit] if lines else type(e).__name__


def exit_code(e: BaseException) -> int:
    """The command line's exit code for `e`: its own, or that of the built-in it stands for."""
    if isinstance(e, CopgenError):
        return e.exit_code
    if out_of_memory(e):
        return EXIT_ENVIRONMENT
    if isinstance(e, FileExistsError):
        return EXIT_OUTPUT_EXISTS
    if isinstance(e, ValueError | KeyError | FileNotFoundError | IsADirectoryError | PermissionError):
        return EXIT_INPUT
    if isinstance(e, ImportError):
        return EXIT_MISSING
    if isinstance(e, OSError):  # read-only, full, not a folder, name too long: the machine said no
        return EXIT_ENVIRONMENT
    return EXIT_INTERNAL


def one_line(e: BaseException) -> str:
    """What a user reads, on one line: our messages whole (a newline in a path escaped), the
    built-ins mapped by `exit_code` by their first line (an OSError as `file: reason`); running
    out of memory in any engine as such; an unexpected exception with its class name (an
    internal error)."""
    if isinstance(e, CopgenError) or isinstance(e, ValueError) and not out_of_memory(e):  # ours, or as ours
        return escaped(first_line(e, limit=10_000) if isinstance(e, KeyError) else str(e).strip()) \
            or type(e).__name__
    if out_of_memory(e):
        said = "" if isinstance(e, MemoryError) else f" ({escaped(first_line(e, limit=120))})"
        return f"out of memory{said}: lower --batch-size or use a smaller model"
    if isinstance(e, OSError) and e.strerror:
        where = f"{e.filename}: " if e.filename is not None else ""
        return escaped(f"{where}{e.strerror}")
    text = escaped(first_line(e, limit=10_000))
    if exit_code(e) != EXIT_INTERNAL:
        return text
    return f"{type(e).__name__}: {text}" if text != type(e).__name__ else text


def command_line_report(e: BaseException) -> tuple[int, str]:
    """(exit code, the line after "copgen-rt: error: ") of a command that failed with `e`."""
    code, line = exit_code(e), one_line(e)
    if code == EXIT_INTERNAL and not isinstance(e, CopgenError):
        line = f"internal error: {line} (set COPGEN_RT_DEBUG=1 for a traceback)"
    return code, line
