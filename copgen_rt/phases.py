"""What a step that takes more than a second or two is doing (measuring engines, exporting,
compiling, calibrating int8, decoding and writing a scene), said on the `copgen_rt.phases`
logger at INFO: the command line prints it (`copgen_rt.cli.progress.phase_lines`), the API stays
silent unless its caller configures logging. Library code never prints."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

LOGGER = logging.getLogger("copgen_rt.phases")
# a phase's end is said only where it took this long: its start line said enough otherwise
SAY_END_AFTER_S = 2.0


@contextlib.contextmanager
def phase(what: str) -> Iterator[None]:
    """Log `what` ("exporting the denoiser to ONNX") when it starts, and how long it took when it
    ends (if that was long enough to matter)."""
    LOGGER.info("%s ...", what)
    start = time.perf_counter()
    yield
    seconds = time.perf_counter() - start
    if seconds >= SAY_END_AFTER_S:
        LOGGER.info("%s: done in %.0f s", what, seconds)


def step(what: str, done: int, total: int) -> None:
    """A phase's own progress in whole steps: "writing outputs: 3/9"."""
    LOGGER.info("%s: %d/%d", what, done, total)
