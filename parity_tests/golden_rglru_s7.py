"""Loaders of the RG-LRU and S7 golden files (parity_tests/golden/, provenance in its README): each builds the
reference layer from the file's upstream-named arrays and returns the call's inputs and the upstream output.

RG-LRU files hold recurrentgemma's own names (`a_param`, `input_gate.w`, …; block: `rg_lru.*`, `linear_x.weight`,
`conv_1d.w`, …), which are ours; `segment_pos == 0` marks the resets. S7 files hold the flax names of the authors'
code: x_proj.kernel = x_proj.weightᵀ, step_proj.step_proj_kernel = dt_proj.weightᵀ, step_proj_bias = dt_proj.bias.
Shared by reference_tests/test_rglru.py, reference_tests/test_s7.py and parity_tests/test_golden_rglru_s7.py.
"""
from pathlib import Path

import numpy as np

from reference.layers.rglru import RGLRU
from reference.layers.s7 import S7

GOLDEN = Path(__file__).parent / "golden"
NOT_PARAMS = ("x", "segment_pos", "integration_timesteps", "y", "h_last", "meta")

# file -> constructor arguments besides d_model (read from the file's `meta` shapes line)
RGLRU_FILES = {"rglru_L17": {"num_heads": 2}, "rglru_reset_L17": {"num_heads": 2},
               "rglru_block_reset_L17": {"num_heads": 2, "block": True, "lru_width": 8}}
S7_FILES = {"s7_official_zoh_L17": {"discretization": "zoh", "conj_sym": False, "blocks": 2},
            "s7_official_async_conj_L17": {"discretization": "async", "conj_sym": True, "blocks": 2}}
S7_UPSTREAM_STABLESSM = ("s7_official_zoh_stablessm_L17", {"discretization": "zoh", "conj_sym": True, "blocks": 2})


def load(name):
    """The arrays of golden file `name` (without .npz) as a dict."""
    with np.load(GOLDEN / f"{name}.npz", allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def rglru_case(name):
    """(layer, x (b, L, H), resets (b, L) bool, y (b, L, H), h_last (b, E) or None) of an RG-LRU golden file."""
    data = load(name)
    params = {k: v for k, v in data.items() if k not in NOT_PARAMS}
    layer = RGLRU.from_params({"d_model": data["x"].shape[-1], **RGLRU_FILES[name]}, params)
    return layer, data["x"], data["segment_pos"] == 0, data["y"], data.get("h_last")


def s7_params(data):
    """Our S7 params from the flax names of an S7 golden file."""
    return {"Lambda_re": data["Lambda_re"], "Lambda_im": data["Lambda_im"],
            "x_proj.weight": data["x_proj.kernel"].T, "x_proj.bias": data["x_proj.bias"],
            "dt_proj.weight": data["step_proj.step_proj_kernel"].T, "dt_proj.bias": data["step_proj.step_proj_bias"],
            "D": data["D"]}


def s7_case(name, arguments=None, **overrides):
    """(layer, x (b, L, H), τ (b, L), y (b, L, H)) of an S7 golden file; `overrides` replace constructor arguments."""
    data = load(name)
    arguments = dict(S7_FILES[name] if arguments is None else arguments, **overrides)
    config = {"d_model": data["x"].shape[-1], "d_state": data["Lambda_re"].shape[0], **arguments}
    layer = S7.from_params(config, s7_params(data))
    return layer, data["x"], data["integration_timesteps"], data["y"]


def upstream_stablessm_Lambda(w_re, w_im, a=1.0, b=0.5):
    """The authors' forward map (SPEC §10a): Λ = −sqrt((−1 − b·w)/(a·w)), w = Lambda_re + i·Lambda_im complex."""
    w = w_re + 1j * w_im
    return -np.sqrt((-1 - b * w) / (a * w))
