"""Bidirectional S5 (SPEC §4.12) against the official S5 code's `apply_ssm(bidirectional=True)`, float64.

The golden files (parity_tests/golden/, provenance in its README) hold outputs of lindermanlab/S5 run unmodified:
one Λ̄ and B̄ shared by both directions, the states concatenated and read by C̃ (H, 2P). Our S5 with
bidirectional=True holds the same system as C = C̃[:, :P], C_back = C̃[:, P:] (D = 0); the reference and the
backend twin must give the file's outputs at the golden tolerance, and the reference's Λ̄ must be the file's.
"""
from pathlib import Path

import numpy as np
import pytest

from parity_tests.backend import check
from reference.layers.s5 import S5

GOLDEN = Path(__file__).parent / "golden"
CASES = [(method, conj_sym) for method in ("zoh", "bilinear") for conj_sym in (False, True)]


def golden_s5(method, conj_sym):
    """(the golden arrays, the reference S5 holding the file's system)."""
    with np.load(GOLDEN / f"s5_bidirectional_{method}_{'conj' if conj_sym else 'full'}_L17.npz",
                 allow_pickle=False) as data:
        golden = {key: data[key] for key in data.files}
    H, P = golden["u"].shape[1], golden["Lambda_re"].shape[0]
    C_tilde = golden["C_tilde_re"] + 1j * golden["C_tilde_im"]                          # (H, 2P)
    params = {"Lambda_re": golden["Lambda_re"], "Lambda_im": golden["Lambda_im"],
              "B_re": golden["B_tilde_re"], "B_im": golden["B_tilde_im"],
              "C_re": C_tilde[:, :P].real, "C_im": C_tilde[:, :P].imag,
              "C_back_re": C_tilde[:, P:].real, "C_back_im": C_tilde[:, P:].imag,
              "D": np.zeros(H), "log_dt": np.log(golden["Delta"])}
    config = {"d_model": H, "d_state": P, "discretization": method, "conj_sym": conj_sym, "bidirectional": True,
              "seed": 0}
    return golden, S5.from_params(S5(**config).config, params)


@pytest.mark.parametrize("method, conj_sym", CASES)
def test_reference_reproduces_the_official_bidirectional_output(method, conj_sym):
    golden, layer = golden_s5(method, conj_sym)
    Lambda_bar = layer.discrete_system()[0]                                             # (P,)
    check(Lambda_bar, golden["Lambda_bar_re"] + 1j * golden["Lambda_bar_im"], dtype="float64", subject="S5",
          prop=f"golden bidirectional Λ̄ ({method}, conj_sym={conj_sym})", row="golden")
    check(layer(golden["u"][None])[0], golden["ys"], dtype="float64", subject="S5",
          prop=f"golden bidirectional y, reference ({method}, conj_sym={conj_sym})", row="golden")


@pytest.mark.parametrize("method, conj_sym", CASES)
def test_backend_reproduces_the_official_bidirectional_output(backend, method, conj_sym):
    golden, layer = golden_s5(method, conj_sym)
    backend.supports("S5", layer.config, "float64")
    module = backend.build(layer, "float64", subject="S5")
    y = module(backend.to(golden["u"][None], "float64"))
    check(backend.to_numpy(y)[0], golden["ys"], dtype="float64", subject="S5",
          prop=f"golden bidirectional y ({method}, conj_sym={conj_sym})", row="golden")
