"""Loaders of the S6 golden files (parity_tests/golden/, provenance in its README): the file's arrays, and the
reference layer built from its upstream-named parameters (mamba_ssm's own names, torch (out, in) layout).
Shared by reference_tests/test_s6.py and parity_tests/test_golden_s6.py.
"""
from pathlib import Path

import numpy as np

from reference.layers.s6 import S6

GOLDEN = Path(__file__).parent / "golden"
SSM_KEYS = ("x_proj.weight", "dt_proj.weight", "dt_proj.bias", "A_log", "D")
BLOCK_KEYS = SSM_KEYS + ("in_proj.weight", "conv1d.weight", "conv1d.bias", "out_proj.weight")


def load(name):
    """Every array of golden file `name` (without .npz), as a dict."""
    with np.load(GOLDEN / f"{name}.npz", allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def golden_layer(golden, discretization="exp_euler", block=False):
    """The reference layer holding a golden file's upstream-named parameters."""
    H, N = golden["x"].shape[2], golden["A_log"].shape[1]
    config = {"d_model": H, "d_state": N, "dt_rank": golden["dt_proj.weight"].shape[1],
              "discretization": discretization, "block": block, "seed": 0}
    if block:
        config.update(expand=golden["A_log"].shape[0] // H, d_conv=golden["conv1d.weight"].shape[2])
    return S6.from_params(config, {key: golden[key] for key in (BLOCK_KEYS if block else SSM_KEYS)})
