"""Adapter: the Blelloch parallel scan of `mambapy==1.2.0` (mamba.py's `mambapy.pscan.pscan`, the scan its
selective SSM trains with), checked as this project's SPEC §3 scan.

    pip install --no-deps mambapy==1.2.0
    pytest parity_tests --backend parity_tests.adapters.mambapy_pscan

The package solves h_t = A_t h_{t-1} + X_t for A, X of shape (B, L, D, N) (no initial state), padding L to the
next power of two. The adapter views (b, L, N) as (b, L, 1, N), broadcasts a time-invariant a over (b, L), and
folds an initial state into the first token (X_1 + A_1 h0, which is the recurrence's first step). It provides
the scan only: the layer properties are reported "not run" (no from_reference), never passed.
"""
import torch

try:
    from mambapy.pscan import pscan as package_scan
except ImportError as error:                       # the suite reports the adapter as unusable, naming the package
    raise ImportError("parity_tests.adapters.mambapy_pscan needs mambapy==1.2.0 "
                      "(pip install --no-deps mambapy==1.2.0)") from error

from torch_backend.testing import asarray, device_available, to_numpy, vjp

__all__ = ["asarray", "to_numpy", "device_available", "scan", "vjp", "DECLARATIONS"]
DECLARATIONS = {"layers": ()}                      # a scan package: no layers


def scan(a, b, h0=None):
    """h (b, L, N) of h_t = a_t h_{t-1} + b_t through mambapy.pscan.pscan (as (b, L, 1, N) inside)."""
    a = torch.broadcast_to(a, b.shape)                                               # (b, L, N)
    if h0 is not None:
        b = torch.cat([b[:, :1] + a[:, :1] * h0[:, None], b[:, 1:]], dim=1)          # (b, L, N)
    return package_scan(a[:, :, None, :].contiguous(), b[:, :, None, :].contiguous())[:, :, 0, :]   # (b, L, N)
