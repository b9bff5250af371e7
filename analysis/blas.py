"""Single-threaded BLAS around the law fits (analysis.fit).

The fits call BLAS and LAPACK on matrices of a few rows (8 x 8 Hessians, a few hundred points); on a
machine whose cores are busy, OpenBLAS's worker threads then wait on each other (one 5-parameter
SciPy L-BFGS-B fit took ~1 s instead of ~10 ms on 2 shared cores). threadpoolctl does this
generally; this is the one case we need, without a dependency.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy
import scipy

# NumPy and SciPy wheels bundle OpenBLAS next to the package; other builds (system BLAS) are left alone.
_LIBS = [
    ctypes.CDLL(str(p))
    for module in (numpy, scipy)
    for p in (Path(module.__file__).parent.parent / f"{module.__name__}.libs").glob("*openblas*.so")
]
_LIBS = [lib for lib in _LIBS if hasattr(lib, "openblas_set_num_threads_local")]


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block with one OpenBLAS thread in this thread, then restore the previous count."""
    previous = [lib.openblas_set_num_threads_local(1) for lib in _LIBS]
    try:
        yield
    finally:
        for lib, n in zip(_LIBS, previous, strict=True):
            lib.openblas_set_num_threads_local(n)
