"""`step(..., inplace=True)` of the selective and matrix-state mixers (S6 bare and block, RGLRU bare and block, S7,
GLA, GatedDeltaNet, DeltaProduct): the new state written into the given tensors, the values of the functional step,
the two errors, and what an in-place step allocates per event (torch.profiler, as torch_tests/test_streaming.py).
"""
import pytest
import torch

import torch_backend
from torch_backend.streaming import allocated_bytes, nbytes
from parity_tests.tolerances import assert_close
from reference.layers.s6 import S6_METHODS

SIZE = {"d_model": 16, "d_state": 32}
BATCH = 2
EVENTS = 3

# (name, class, constructor arguments on top of SIZE): every discretisation and variant with a step.
VARIANTS = ([(f"S6-{m}", "S6", {"discretization": m}) for m in S6_METHODS]
            + [(f"S6-block-{m}", "S6", {"discretization": m, "block": True}) for m in S6_METHODS]
            + [(f"S7-{m}", "S7", {"discretization": m}) for m in S6_METHODS]
            + [("S7-conj_sym", "S7", {"conj_sym": True})]
            + [("RGLRU", "RGLRU", {}), ("RGLRU-heads", "RGLRU", {"num_heads": 2}), ("RGLRU-block", "RGLRU", {"block": True}),
               ("RGLRU-block-heads", "RGLRU", {"block": True, "num_heads": 4})]
            + [("GLA", "GLA", {}), ("GLA-linear-attention", "GLA", {"use_gate": False})]
            + [("GatedDeltaNet", "GatedDeltaNet", {}), ("DeltaNet", "GatedDeltaNet", {"use_gate": False}),
               ("GatedDeltaNet-negative", "GatedDeltaNet", {"allow_neg_eigval": True})]
            + [("DeltaProduct", "DeltaProduct", {}), ("DeltaProduct-3", "DeltaProduct", {"n_householder": 3}),
               ("DeltaProduct-no-gate", "DeltaProduct", {"use_forget_gate": False})])
NO_D_STATE = ("RGLRU", "GLA", "GatedDeltaNet", "DeltaProduct")


def build(cls_name, kwargs, dtype=torch.float64):
    size = {k: v for k, v in SIZE.items() if not (k == "d_state" and cls_name in NO_D_STATE)}
    return getattr(torch_backend, cls_name)(**size, **kwargs, seed=0).to(dtype).eval()


def parts(state):
    return list(state) if isinstance(state, tuple) else [state]


def events(layer, batch, with_tau, dtype=torch.float64):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(EVENTS, batch, SIZE["d_model"], generator=generator, dtype=dtype)
    tau = torch.rand(EVENTS, batch, generator=generator, dtype=dtype) * 2 if with_tau else [None] * EVENTS
    return x, tau


def with_tau_cases():
    """(variant, with_tau) for every variant; τ only where the layer accepts it (not linear attention, DeltaNet)."""
    cases = []
    for name, cls_name, kwargs in VARIANTS:
        for with_tau in (False, True):
            if with_tau and not getattr(build(cls_name, kwargs), "accepts_timesteps", True):
                continue
            cases.append(pytest.param(cls_name, kwargs, with_tau, id=f"{name}-{'tau' if with_tau else 'no_tau'}"))
    return cases


@pytest.mark.parametrize("cls_name, kwargs, with_tau", with_tau_cases())
def test_an_inplace_step_equals_the_functional_step_and_writes_the_given_state(cls_name, kwargs, with_tau):
    layer = build(cls_name, kwargs)
    x, tau = events(layer, BATCH, with_tau)
    with torch.no_grad():
        functional = layer.init_state(BATCH)
        given = layer.init_state(BATCH)
        for t in range(EVENTS):
            y_f, functional = layer.step(x[t], functional, tau[t])
            y_i, returned = layer.step(x[t], given, tau[t], inplace=True)
            assert all(r is g for r, g in zip(parts(returned), parts(given)))              # the given tensors
            assert type(returned) is type(functional)
            assert_close(y_i.numpy(), y_f.numpy(), "float64", what=f"y at event {t}")
            for part, (g, f) in enumerate(zip(parts(given), parts(functional))):
                assert_close(g.numpy(), f.numpy(), "float64", what=f"state[{part}] at event {t}")


def test_a_functional_step_leaves_the_given_state_as_it_was():
    layer = build("GatedDeltaNet", {})
    x, tau = events(layer, BATCH, True)
    with torch.no_grad():
        _, state = layer.step(x[0], layer.init_state(BATCH), tau[0], inplace=True)
        before = state.clone()
        _, new_state = layer.step(x[1], state, tau[1])
    assert new_state is not state and torch.equal(state, before)


@pytest.mark.parametrize("reset_rows", [[True, False], [False, True], [True, True]])
@pytest.mark.parametrize("block", [False, True])
def test_an_inplace_rglru_step_with_resets_equals_the_functional_step(block, reset_rows):
    layer = build("RGLRU", {"block": block, "num_heads": 2})
    x, tau = events(layer, BATCH, True)
    reset = torch.tensor(reset_rows)
    with torch.no_grad():
        functional = given = None
        for t in range(EVENTS):
            if t == 0:
                _, functional = layer.step(x[t], layer.init_state(BATCH), tau[t])
                given = functional.clone()
                continue
            y_f, functional = layer.step(x[t], functional, tau[t], reset=reset)
            y_i, returned = layer.step(x[t], given, tau[t], reset=reset, inplace=True)
            assert returned is given
            assert_close(y_i.numpy(), y_f.numpy(), "float64", what=f"y at event {t}")
            assert_close(given.numpy(), functional.numpy(), "float64", what=f"state at event {t}")


# ----------------------------------------------------------------------------- the two errors
ERROR_LAYERS = [("S6", {}), ("S6", {"block": True}), ("S7", {}), ("RGLRU", {}), ("RGLRU", {"block": True}),
                ("GLA", {}), ("GatedDeltaNet", {}), ("DeltaProduct", {})]


@pytest.mark.parametrize("cls_name, kwargs", ERROR_LAYERS)
def test_an_inplace_step_with_autograd_on_is_refused(cls_name, kwargs):
    layer = build(cls_name, kwargs, torch.float32)
    x_t = torch.randn(BATCH, SIZE["d_model"])
    with torch.enable_grad(), pytest.raises(ValueError, match="autograd"):
        layer.step(x_t, layer.init_state(BATCH), inplace=True)


# A state the checks accept but convert (an integer tensor, a NumPy array) cannot take the new state in place.
CONVERTED = {"int64": lambda part: part.real.to(torch.int64), "numpy": lambda part: part.numpy()}


@pytest.mark.parametrize("kind", list(CONVERTED))
@pytest.mark.parametrize("cls_name, kwargs", ERROR_LAYERS)
def test_an_inplace_step_into_a_state_of_another_dtype_is_refused(cls_name, kwargs, kind):
    layer = build(cls_name, kwargs, torch.float32)
    x_t = torch.randn(BATCH, SIZE["d_model"])
    zero = layer.init_state(BATCH)
    state = tuple(CONVERTED[kind](part) for part in parts(zero))
    with torch.no_grad(), pytest.raises(ValueError, match="inplace=True"):
        layer.step(x_t, state if isinstance(zero, tuple) else state[0], inplace=True)


# ----------------------------------------------------------------------------- memory of an in-place step
# What an in-place step allocates per event, at SIZE in float32 after one warm-up event (the workspace buffers are
# made then), measured: besides y_t (b, H) only the scalars of the step's checks and of discretize_event's overflow
# read (all_finite's min/max of x_t, τ, the state and λΔ: about 30 bytes each, whatever the batch) and small masks
# (zoh's |λΔ_A| < sqrt(ε), 1 byte per state entry). In states: S6 0.03–0.09 (zoh and async 0.28–0.36: their mask
# of a real state), S6 block 0.01–0.28, S7 0.26–0.94, RGLRU block 0.25–0.64, GLA, GatedDeltaNet, DeltaProduct
# 0.25–0.71 (the larger numbers at batch 1, where the scalars weigh most). So every step is <= 1 state, except two
# tiny states that cannot absorb the fixed scalars, bounded by one state plus STEP_CHECK_BYTES:
# * the bare RG-LRU, whose output y_t = h IS its state (b, E): a new y_t (it must not alias the state the next
#   event overwrites) is one state already (measured 126 bytes without τ and 163 with, for 64 at batch 1; 62 and
#   99 bytes above the state at batch 64);
# * S7 with async at batch 1 with τ: 267 bytes for a 256-byte state (32 complex64), async's γ̄ = Δ_t φ1(ΛΔ_t)
#   being a second discretize_event call, with its own overflow read and mask.
STATE_BOUND = 1.0
STEP_CHECK_BYTES = 128
MEMORY_LAYERS = {**{f"S6-{m}": ("S6", {"discretization": m}) for m in S6_METHODS},
                 "S6-block": ("S6", {"block": True}), "S6-block-zoh": ("S6", {"block": True, "discretization": "zoh"}),
                 **{f"S7-{m}": ("S7", {"discretization": m}) for m in S6_METHODS},
                 "RGLRU": ("RGLRU", {}), "RGLRU-block": ("RGLRU", {"block": True}), "GLA": ("GLA", {}),
                 "GatedDeltaNet": ("GatedDeltaNet", {}), "DeltaProduct": ("DeltaProduct", {})}
TINY_STATES = {("RGLRU", 1, False), ("RGLRU", 1, True), ("RGLRU", 64, False), ("RGLRU", 64, True),
               ("S7-async", 1, True)}


def measure(cls_name, kwargs, batch, with_tau):
    layer = build(cls_name, kwargs, torch.float32)
    x_t = torch.randn(batch, SIZE["d_model"], generator=torch.Generator().manual_seed(0))
    tau = torch.full((batch,), 0.7) if with_tau else None
    with torch.no_grad():
        _, state = layer.step(x_t, layer.init_state(batch), tau, inplace=True)    # makes the workspace buffers
        (y_t, state), allocated = allocated_bytes(lambda: layer.step(x_t, state, tau, inplace=True))
    return allocated, nbytes(state), nbytes(y_t)


@pytest.mark.parametrize("with_tau", [False, True])
@pytest.mark.parametrize("batch", [1, 64])
@pytest.mark.parametrize("name", list(MEMORY_LAYERS))
def test_an_inplace_step_allocates_at_most_its_state(name, batch, with_tau):
    allocated, state_bytes, y_bytes = measure(*MEMORY_LAYERS[name], batch, with_tau)
    bound = STATE_BOUND * state_bytes
    if (name, batch, with_tau) in TINY_STATES:
        bound = state_bytes + STEP_CHECK_BYTES
        assert name != "RGLRU" or y_bytes == state_bytes                       # y_t = h: the output is a state
    assert allocated <= bound, (f"{name}.step(inplace=True) allocated {allocated} bytes; its state holds "
                                f"{state_bytes} (bound {bound})")
