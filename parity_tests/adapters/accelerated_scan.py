"""Adapter: the pure-torch reference scan of `accelerated-scan==0.3.1` (`accelerated_scan.ref.scan`), checked as this
project's SPEC §3 scan.

    pip install --no-deps accelerated-scan==0.3.1
    pytest parity_tests --backend parity_tests.adapters.accelerated_scan

The package solves x_t = a_t x_{t-1} + b_t for gates a and tokens b of shape (B, C, T) (time last, no initial
state). The adapter moves the time axis last, broadcasts a time-invariant a over (b, L), and folds an initial
state into the first token (b_1 + a_1 h0, which is the recurrence's first step). It provides the scan only: the
layer properties are reported "not run" (no from_reference), never passed.
"""
import torch

try:
    from accelerated_scan.ref import scan as package_scan
except ImportError as error:                       # the suite reports the adapter as unusable, naming the package
    raise ImportError("parity_tests.adapters.accelerated_scan needs accelerated-scan==0.3.1 "
                      "(pip install --no-deps accelerated-scan==0.3.1)") from error

from torch_backend.testing import asarray, device_available, to_numpy, vjp

__all__ = ["asarray", "to_numpy", "device_available", "scan", "vjp", "DECLARATIONS"]
DECLARATIONS = {"layers": ()}                      # a scan package: no layers


def scan(a, b, h0=None):
    """h (b, L, N) of h_t = a_t h_{t-1} + b_t through accelerated_scan.ref.scan (time last inside)."""
    a = torch.broadcast_to(a, b.shape)                                               # (b, L, N)
    if h0 is not None:
        b = torch.cat([b[:, :1] + a[:, :1] * h0[:, None], b[:, 1:]], dim=1)          # (b, L, N)
    gates, tokens = a.transpose(1, 2).contiguous(), b.transpose(1, 2).contiguous()   # (b, N, L)
    return package_scan(gates, tokens).transpose(1, 2)                               # (b, L, N)
