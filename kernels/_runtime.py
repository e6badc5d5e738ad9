"""What the kernels need to know about where Triton runs them."""

from __future__ import annotations

import triton


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (`TRITON_INTERPRET=1`).

    The interpreter executes each program with numpy, so launch configurations are chosen for
    few, large programs there and autotuning (which times kernels with CUDA events) is off.
    """
    return bool(triton.knobs.runtime.interpret)
