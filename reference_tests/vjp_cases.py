"""The layer cases of the hand-written backward's tests, shared by reference_tests/test_vjp.py (against finite
differences) and torch_tests/test_vjp.py (against torch autograd): (id, reference class, constructor kwargs).
A helper module, not a test module."""
from reference.discretize import DENSE_METHODS
from reference.layers.centaurus import Centaurus
from reference.layers.deltaproduct import DeltaProduct
from reference.layers.gated_deltanet import GatedDeltaNet
from reference.layers.gla import GLA
from reference.layers.lru import LRU
from reference.layers.lssl import LSSL
from reference.layers.multiresconv import MultiresConv
from reference.layers.rglru import RGLRU
from reference.layers.s4d import S4D
from reference.layers.s5 import S5
from reference.layers.s6 import S6
from reference.layers.s7 import S7

CONTINUOUS = ("zoh", "bilinear", "exp_euler", "async", "dirac")
CASES = (
    [("LRU", LRU, {"d_model": 3, "d_state": 4})]
    + [(f"S5-{m}", S5, {"d_model": 3, "d_state": 4, "discretization": m}) for m in CONTINUOUS]
    + [("S5-conj_sym-clip", S5, {"d_model": 3, "d_state": 2, "conj_sym": True, "clip_eigs": True})]
    + [(f"S4D-{m}", S4D, {"d_model": 3, "d_state": 2, "discretization": m}) for m in CONTINUOUS]
    + [(f"Centaurus-{mode}-{m}", Centaurus, {"d_model": 2, "d_state": {"dws": 2, "full": 4}.get(mode, 3),
                                            "sub_state_dim": 2, "mode": mode, "discretization": m})
       for mode in ("neck", "pointwise", "dws", "full") for m in CONTINUOUS]
    + [(f"LSSL-{m}-learn_A={a}", LSSL, {"d_model": 2, "d_state": 3, "channels": 2, "discretization": m,
                                        "learn_A": a}) for m in DENSE_METHODS for a in (False, True)]
    + [(f"S6-{m}", S6, {"d_model": 3, "d_state": 2, "discretization": m}) for m in CONTINUOUS]
    + [("S6-block", S6, {"d_model": 2, "d_state": 2, "block": True, "d_conv": 3, "bias": True})]
    + [(f"S7-{m}", S7, {"d_model": 2, "d_state": 2, "discretization": m}) for m in CONTINUOUS]
    + [("S7-conj_sym-clip-stablessm", S7, {"d_model": 2, "d_state": 2, "conj_sym": True, "clip_eigs": True,
                                           "reparam": "stablessm"})]
    + [("RGLRU", RGLRU, {"d_model": 4, "num_heads": 2}),
       ("RGLRU-block", RGLRU, {"d_model": 2, "block": True, "lru_width": 4, "num_heads": 2,
                               "conv1d_temporal_width": 3})]
    + [("LRU-bidirectional", LRU, {"d_model": 3, "d_state": 4, "bidirectional": True}),
       ("S5-bidirectional-conj_sym", S5, {"d_model": 3, "d_state": 2, "conj_sym": True, "bidirectional": True}),
       ("S4D-bidirectional-bilinear", S4D, {"d_model": 3, "d_state": 2, "discretization": "bilinear",
                                            "bidirectional": True})]
    + [(f"Centaurus-bidirectional-{mode}-{m}", Centaurus, {"d_model": 2, "d_state": {"dws": 2, "full": 4}.get(mode, 3),
                                                          "sub_state_dim": 2, "mode": mode, "discretization": m,
                                                          "bidirectional": True})
       for mode, m in (("neck", "zoh"), ("pointwise", "async"), ("dws", "exp_euler"), ("full", "bilinear"))]
    + [(f"LSSL-bidirectional-{m}-learn_A={a}", LSSL, {"d_model": 2, "d_state": 3, "channels": 2, "discretization": m,
                                                      "learn_A": a, "bidirectional": True})
       for m, a in (("zoh", True), ("bilinear", False))]
    + [("RGLRU-bidirectional", RGLRU, {"d_model": 4, "num_heads": 2, "bidirectional": True}),
       ("RGLRU-block-bidirectional", RGLRU, {"d_model": 2, "block": True, "lru_width": 4, "num_heads": 2,
                                             "conv1d_temporal_width": 3, "bidirectional": True})]
    + [("S6-bidirectional-exp_euler", S6, {"d_model": 3, "d_state": 2, "bidirectional": True}),
       ("S6-bidirectional-async", S6, {"d_model": 3, "d_state": 2, "discretization": "async", "bidirectional": True}),
       ("S6-block-bidirectional-bilinear", S6, {"d_model": 2, "d_state": 2, "block": True, "d_conv": 3, "bias": True,
                                                "discretization": "bilinear", "bidirectional": True})]
    + [("S7-bidirectional-zoh", S7, {"d_model": 2, "d_state": 2, "bidirectional": True}),
       ("S7-bidirectional-dirac-conj_sym-clip-stablessm", S7, {"d_model": 2, "d_state": 2, "discretization": "dirac",
                                                               "conj_sym": True, "clip_eigs": True,
                                                               "reparam": "stablessm", "bidirectional": True})]
    + [("GLA", GLA, {"d_model": 4, "n_heads": 2, "gate_low_rank_dim": 2}),
       ("GLA-linear-attention", GLA, {"d_model": 4, "n_heads": 2, "use_gate": False}),
       ("GatedDeltaNet", GatedDeltaNet, {"d_model": 4, "n_heads": 2}),
       ("GatedDeltaNet-DeltaNet-neg", GatedDeltaNet, {"d_model": 4, "n_heads": 2, "use_gate": False,
                                                      "allow_neg_eigval": True}),
       ("DeltaProduct", DeltaProduct, {"d_model": 4, "n_heads": 2, "n_householder": 2})]
    + [("GLA-bidirectional", GLA, {"d_model": 4, "n_heads": 2, "gate_low_rank_dim": 2, "bidirectional": True}),
       ("GatedDeltaNet-bidirectional-neg", GatedDeltaNet, {"d_model": 4, "n_heads": 2, "allow_neg_eigval": True,
                                                          "bidirectional": True}),
       ("DeltaProduct-bidirectional", DeltaProduct, {"d_model": 4, "n_heads": 2, "n_householder": 2,
                                                     "bidirectional": True})]
    + [("MultiresConv-fading", MultiresConv, {"d_model": 2, "kernel_size": 3, "depth": 2}),
       ("MultiresConv-uniform", MultiresConv, {"d_model": 2, "kernel_size": 2, "depth": 3, "memory": "uniform",
                                               "memory_size": 5})]
)


# finite differences are slower: Centaurus' neck, dws and full modes are differenced with exp_euler and zoh only
FINITE_DIFFERENCE_CASES = [case for case in CASES if not (
    case[1] is Centaurus and case[2].get("mode") != "pointwise" and not case[2].get("bidirectional")
    and case[2]["discretization"] not in ("exp_euler", "zoh"))]
