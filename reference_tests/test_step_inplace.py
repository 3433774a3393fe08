"""`step(..., inplace=True)` of the reference's selective and matrix-state mixers (S6 bare and block, RGLRU bare
and block, S7, GLA, GatedDeltaNet, DeltaProduct): the functional step's values written into the given arrays,
which are returned; a state of another dtype, or a read-only one, is refused.
"""
import numpy as np
import pytest

import reference
from parity_tests.tolerances import assert_close
from reference.layers.s6 import S6_METHODS

BATCH, EVENTS, D_MODEL = 2, 4, 4

# (name, class, constructor arguments): every discretisation and variant with a step.
VARIANTS = ([(f"S6-{m}", "S6", {"discretization": m}) for m in S6_METHODS]
            + [(f"S6-block-{m}", "S6", {"discretization": m, "block": True}) for m in S6_METHODS]
            + [(f"S7-{m}", "S7", {"discretization": m}) for m in S6_METHODS]
            + [("RGLRU", "RGLRU", {}), ("RGLRU-block", "RGLRU", {"block": True, "num_heads": 2})]
            + [("GLA", "GLA", {"n_heads": 2}), ("GLA-linear-attention", "GLA", {"n_heads": 2, "use_gate": False})]
            + [("GatedDeltaNet", "GatedDeltaNet", {"n_heads": 2}),
               ("DeltaNet", "GatedDeltaNet", {"n_heads": 2, "use_gate": False})]
            + [("DeltaProduct", "DeltaProduct", {"n_heads": 2}),
               ("DeltaProduct-no-gate", "DeltaProduct", {"n_heads": 2, "use_forget_gate": False})])
D_STATE = ("S6", "S7")


def build(cls_name, kwargs):
    sizes = {"d_model": D_MODEL, **({"d_state": 3} if cls_name in D_STATE else {})}
    return getattr(reference, cls_name)(**sizes, **kwargs, seed=1)


def parts(state):
    return list(state) if isinstance(state, tuple) else [state]


def cases():
    """(variant, with_tau), τ only where the layer accepts it (not linear attention, not DeltaNet)."""
    return [pytest.param(cls_name, kwargs, with_tau, id=f"{name}-{'tau' if with_tau else 'no_tau'}")
            for name, cls_name, kwargs in VARIANTS for with_tau in (False, True)
            if not (with_tau and not getattr(build(cls_name, kwargs), "accepts_timesteps", True))]


@pytest.mark.parametrize("cls_name, kwargs, with_tau", cases())
def test_an_inplace_step_writes_the_functional_step_into_the_given_state(cls_name, kwargs, with_tau):
    layer = build(cls_name, kwargs)
    rng = np.random.default_rng(0)
    x, tau = rng.normal(size=(BATCH, EVENTS, D_MODEL)), np.exp(rng.uniform(-3, 1, (BATCH, EVENTS)))
    tau[0, 2] = 0.0                                                               # a dropped gap
    functional, given = layer.init_state(BATCH), layer.init_state(BATCH)
    for t in range(EVENTS):
        tau_t = tau[:, t] if with_tau else None
        before = [part.copy() for part in parts(functional)]
        y_f, new_functional = layer.step(x[:, t], functional, tau_t)
        assert all(np.array_equal(part, old) for part, old in zip(parts(functional), before))   # left as it was
        functional = new_functional
        y_i, returned = layer.step(x[:, t], given, tau_t, inplace=True)
        assert type(returned) is type(given) and all(r is g for r, g in zip(parts(returned), parts(given)))
        assert_close(y_i, y_f, "float64", what=f"output at event {t}")
        for part, (g, f) in enumerate(zip(parts(given), parts(functional))):
            assert_close(g, f, "float64", what=f"state[{part}] at event {t}")


@pytest.mark.parametrize("block", [False, True])
def test_an_inplace_rglru_step_with_resets_writes_the_functional_step(block):
    layer = build("RGLRU", {"block": block, "num_heads": 2})
    rng = np.random.default_rng(2)
    x = rng.normal(size=(BATCH, EVENTS, D_MODEL))
    resets = np.array([[False, True], [True, True], [False, False], [True, False]])    # (events, b)
    functional, given = layer.init_state(BATCH), layer.init_state(BATCH)
    for t in range(EVENTS):
        y_f, functional = layer.step(x[:, t], functional, reset=resets[t])
        y_i, returned = layer.step(x[:, t], given, reset=resets[t], inplace=True)
        assert returned is given
        assert_close(y_i, y_f, "float64", what=f"output at event {t}")
        assert_close(given, functional, "float64", what=f"state at event {t}")


ERROR_LAYERS = [("S6", {}), ("S6", {"block": True}), ("S7", {}), ("RGLRU", {}), ("RGLRU", {"block": True}),
                ("GLA", {}), ("GatedDeltaNet", {}), ("DeltaProduct", {})]


@pytest.mark.parametrize("cls_name, kwargs", ERROR_LAYERS)
def test_an_inplace_step_refuses_a_state_of_another_dtype_or_a_read_only_one(cls_name, kwargs):
    layer = build(cls_name, kwargs)
    zero = layer.init_state(BATCH)
    narrow = tuple(part.astype(np.complex64 if np.iscomplexobj(part) else np.float32) for part in parts(zero))
    with pytest.raises(ValueError, match="inplace=True"):
        layer.step(np.zeros((BATCH, D_MODEL)), narrow if isinstance(zero, tuple) else narrow[0], inplace=True)
    parts(zero)[-1].flags.writeable = False
    with pytest.raises(ValueError, match="inplace=True"):
        layer.step(np.zeros((BATCH, D_MODEL)), zero, inplace=True)
