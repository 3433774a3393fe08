"""How the compiled kernels are built and launched so that they work wherever users run them.

* `njit_cached(**options)`: Numba's `njit` with the on-disk cache (`cache=True`); where no cache folder
  is writable (a read-only install with an unwritable home) Numba refuses to build the function at import
  ("cannot cache function"); then the function is compiled without a cache and a RuntimeWarning says how
  to get one back (NUMBA_CACHE_DIR).
* `parallel_kernel(**options)`: a `parallel=True` kernel together with its serial twin (the same Python
  function compiled without `parallel`; `prange` then runs as `range`). A call runs the serial twin
  - below PARALLEL_MIN_SIZE elements (waking the other threads costs more than the work), and
  - in a process forked after this one launched a parallel kernel: GNU OpenMP (Numba's default threading
    layer on Linux) aborts a forked child that enters a parallel region ("fork() called from a process
    already using GNU OpenMP"), which is what `multiprocessing` fork pools and DataLoader workers do;
  and otherwise the parallel kernel — one launch at a time while the threading layer is unknown or is
  `workqueue` (Numba's fallback where OpenMP and TBB are missing), which aborts the process on concurrent
  launches from several threads.
The kernels themselves are unchanged by this: `kernel.parallel` and `kernel.serial` are plain dispatchers.
"""
import os
import threading
import types
import warnings

import numba
from numba import njit

# Below this many elements one thread is faster: waking the others costs ~10 µs on an idle machine and
# milliseconds when the cores are oversubscribed (measured: 0.13 ms of work took 6 ms on 2 threads).
PARALLEL_MIN_SIZE = 1 << 16

_state = {"launched": False, "forked": False, "layer": None}
_launch_lock = threading.Lock()


def _after_fork_in_child():
    if _state["launched"]:
        _state["forked"] = True            # parallel regions would abort here: serial twins from now on


os.register_at_fork(after_in_child=_after_fork_in_child)


def njit_cached(**options):
    """`numba.njit(cache=True, **options)`, or without the cache (and a warning) where none can be written."""
    def decorate(function):
        try:
            return njit(cache=True, **options)(function)
        except RuntimeError as error:
            if "cannot cache" not in str(error):
                raise
            warnings.warn(f"Numba cannot cache {function.__qualname__} ({error}); compiling it without an "
                          "on-disk cache, so every new process compiles it again. Set NUMBA_CACHE_DIR to a "
                          "writable folder to keep compiled kernels.", RuntimeWarning, stacklevel=2)
            return njit(cache=False, **options)(function)
    return decorate


class ParallelKernel:
    """A parallel Numba kernel and its serial twin; calling it picks one (module docstring)."""

    def __init__(self, function, options):
        self.py_func = function
        self.parallel = njit_cached(parallel=True, **options)(function)
        self.serial = njit_cached(**options)(_renamed(function, "_serial"))
        self.__name__, self.__doc__ = function.__name__, function.__doc__

    def __call__(self, *args):
        size = max((arg.size for arg in args if hasattr(arg, "size") and hasattr(arg, "shape")), default=0)
        if size < PARALLEL_MIN_SIZE or _state["forked"]:
            return self.serial(*args)
        if _state["layer"] not in (None, "workqueue"):
            return self.parallel(*args)
        with _launch_lock:                 # the layer is chosen at the first launch; workqueue is not thread-safe
            result = self.parallel(*args)
            _state["launched"] = True
            _state["layer"] = _threading_layer()
        return result


def _threading_layer():
    try:
        return numba.threading_layer()
    except ValueError:                     # no layer started (NUMBA_DISABLE_JIT=1 runs plain Python)
        return None


def _renamed(function, suffix):
    """A copy of `function` under another qualified name. Numba's cache files are named after the
    qualified name and its index does not tell `parallel=True` builds from serial ones: the two twins
    of one function would load each other's machine code."""
    twin = types.FunctionType(function.__code__, function.__globals__, function.__name__ + suffix,
                              function.__defaults__, function.__closure__)
    twin.__qualname__ = function.__qualname__ + suffix
    return twin


def parallel_kernel(**options):
    """Decorator: `@parallel_kernel()` in place of `@njit(cache=True, parallel=True)`."""
    return lambda function: ParallelKernel(function, options)
