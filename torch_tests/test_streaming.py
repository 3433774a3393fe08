"""Torch-only checks of the streaming classifier (SPEC §6.1): the refusals name the block or the rule, as in
the reference, and a stream runs under torch.no_grad() and with gradients alike.

Memory of a step (torch only): in evaluation mode without autograd a step allocates its new state and a few
(b, H) vectors, never the parameter-derived arrays (Λ̄, complex B and C, …), which `Layer._cached` keeps
between events; the cache is never stale (an in-place parameter change is seen at the next event). With an
event gap τ, and in the selective mixers, a step adds only its per-event arrays (Ā_t, γ̄_t from
`discretize_event`, equal to `discretize` to rounding, and what the layer makes from the event).

In place (`step(..., inplace=True)`, LRU, S5, S4D, Centaurus, LSSL, MultiresConv and the classifier): the new
state is written into the given tensors, equal to the functional step's, and an event allocates at most the
bytes of the state (the per-event temporaries live in `Layer._workspace`, LSSL's dense per-event transition
expm(τΔA) included)."""
import numpy as np
import pytest
import torch

import reference as reference_layers
import torch_backend
from reference import Classifier as ReferenceClassifier
from torch_backend import Classifier, from_reference
from torch_backend.discretize import discretize
from torch_backend.discretize_event import discretize_event, matrix_exp_into
from torch_backend.streaming import allocated_bytes, nbytes, state_bytes
from parity_tests.tolerances import assert_close

# Allocation bounds of one step, in (b, H) vectors of the module's real dtype on top of the new state.
# A mixer: the event cast to the complex dtype (2 vectors), the complex read-out C x (2) and y (1), 6 with
# one spare; a parameter-derived array is an (N, H) or (H, N) matrix, N/2 or more such vectors.
MIXER_STEP_VECTORS = 6
# Centaurus reads out Re x, a strided view of the complex state that torch.einsum may copy: half a state more.
REAL_READ_OUT_STATES = {"Centaurus": 0.5}
# A classifier block adds its activation, residual sum and LayerNorm output and a pooling window's sum and
# mean (5 vectors) to its mixer's; the embedding and the final pooling add 3 vectors per event in all.
BLOCK_STEP_VECTORS = MIXER_STEP_VECTORS + 5
STREAM_STEP_VECTORS = 3
# Sizes: the state of S4D (H·N complex numbers per row) is 2N = 64 vectors, so one state-sized temporary
# more than the new state breaks either bound.
SIZE = {"d_model": 16, "d_state": 32}
BATCH = 2


def test_active_dropout_is_refused_naming_the_rule():
    model = Classifier(input_dim=2, num_classes=2, d_model=3, d_state=2, n_layers=1, dropout=0.1, seed=0)
    with pytest.raises(ValueError, match="dropout p=0.1 is active"):
        model.train().init_state(1)
    model.eval().init_state(1)


def test_wrong_event_shape_is_named():
    model = Classifier(input_dim=2, num_classes=2, d_model=3, d_state=2, n_layers=1, seed=0).eval()
    state = model.init_state(2)
    with pytest.raises(ValueError, match="x_t must be one event per row"):
        model.step(torch.zeros(2, 5, 2), state)
    with pytest.raises(ValueError, match="state does not belong to this model and batch"):
        model.step(torch.zeros(3, 2), state)


def test_stream_with_gradients_matches_the_reference_stream():
    reference = ReferenceClassifier(input_dim=2, num_classes=3, d_model=4, d_state=2, n_layers=2,
                                    lrnn_cls=["S5", "LRU"], intermediate_pooling="max", pooling_factor=3,
                                    pooling="mean", seed=1)
    module = from_reference(reference)
    x = np.random.default_rng(0).normal(size=(2, 7, 2))
    state_r, state_t = reference.init_state(2), module.init_state(2)
    for t in range(7):
        y_r, state_r = reference.step(x[:, t], state_r)
        y_t, state_t = module.step(torch.as_tensor(x[:, t]), state_t)
        assert_close(y_t.detach().numpy(), y_r, "float64", what=f"event {t}")
    y_t.sum().backward()
    assert module.head.weight.grad is not None


# ----------------------------------------------------------------------------- memory of a step
MIXERS = {"LRU": {}, "S5": {"conj_sym": True}, "S4D": {}, "S4D-bilinear": {"discretization": "bilinear"},
          "Centaurus": {"sub_state_dim": 4}, "Centaurus-dws": {"mode": "dws", "d_state": 16, "sub_state_dim": 4},
          "LSSL": {}, "MultiresConv": {}}
# The selective and matrix-state mixers (sizes as SIZE; the last four have no d_state).
SELECTIVE_MIXERS = {"S6": {}, "S7": {}, "RGLRU": {}, "GLA": {}, "GatedDeltaNet": {}, "DeltaProduct": {}}
NO_D_STATE = ("MultiresConv", "RGLRU", "GLA", "GatedDeltaNet", "DeltaProduct")


def build_mixer(name):
    cls = getattr(torch_backend, name.split("-")[0])
    kwargs = {**SIZE, **MIXERS.get(name, SELECTIVE_MIXERS.get(name, {}))}
    if name in NO_D_STATE:
        kwargs.pop("d_state")
    return cls(**kwargs, seed=0).eval()


# With an event gap τ a continuous-time mixer also forms Ā_t and γ̄_t (each one state) from the cached Λ and Δ
# (torch_backend.discretize_event.discretize_event), with a few state-sized temporaries on the way (z = λΔ_A, Δ_A, and
# for zoh φ1's numerator: expm1 x, cos y, sin²(y/2), |z|). Measured at SIZE, batch 1, vectors included, in states
# on top of the new state: LRU (dirac) 3.9, Centaurus (exp_euler) 4.0, Centaurus-dws 4.7, S4D-bilinear 2.3,
# S4D (zoh) 5.3, S5 (zoh; a small state, 32 complex numbers, so the vectors weigh most) 8.7 (before: 35–104).
# Bound: the new state, 6 more states, and the vectors; with τ `check_step` also runs the full value checks of
# the event and of τ (masks and |x|, measured 5 vectors at batch 1).
TAU_STEP_STATES = 6
TAU_CHECK_VECTORS = 8
TAU_MIXERS = ["LRU", "S5", "S4D", "S4D-bilinear", "Centaurus", "Centaurus-dws"]

# Not bounded (measured at SIZE, batch 2): LSSL's read-out C x (torch.einsum's batched product over h) copies
# the state, 2.2 states per event; MultiresConv's einsum over its input history copies the window, 3.5
# histories per event. Both keep their (Ā, B̄) or kernel cached like the others.
BOUNDED_MIXERS = [name for name in MIXERS if name not in ("LSSL", "MultiresConv")]


@pytest.mark.parametrize("batch", [1, BATCH])
@pytest.mark.parametrize("name", BOUNDED_MIXERS)
def test_a_mixer_step_allocates_its_new_state_and_a_few_vectors(name, batch):
    layer = build_mixer(name)
    x_t = torch.randn(batch, SIZE["d_model"], generator=torch.Generator().manual_seed(0))
    vector = batch * SIZE["d_model"] * x_t.element_size()
    with torch.no_grad():
        _, state = layer.step(x_t, layer.init_state(batch))                       # the first event fills the cache
        (_, new_state), allocated = allocated_bytes(lambda: layer.step(x_t, state))
    bound = (1 + REAL_READ_OUT_STATES.get(type(layer).__name__, 0)) * nbytes(new_state) \
        + MIXER_STEP_VECTORS * vector
    assert allocated <= bound, (f"{name}.step allocated {allocated} bytes; its new state holds "
                                f"{nbytes(new_state)} (bound {bound})")


@pytest.mark.parametrize("batch", [1, BATCH])
@pytest.mark.parametrize("name", TAU_MIXERS)
def test_a_mixer_step_with_an_event_gap_forms_only_the_per_event_arrays(name, batch):
    layer = build_mixer(name)
    x_t = torch.randn(batch, SIZE["d_model"], generator=torch.Generator().manual_seed(0))
    tau = torch.full((batch,), 0.7)
    vector = batch * SIZE["d_model"] * x_t.element_size()
    with torch.no_grad():
        _, state = layer.step(x_t, layer.init_state(batch), tau)                  # the first event fills the cache
        (_, new_state), allocated = allocated_bytes(lambda: layer.step(x_t, state, tau))
    bound = (1 + TAU_STEP_STATES) * nbytes(new_state) + (MIXER_STEP_VECTORS + TAU_CHECK_VECTORS) * vector
    assert allocated <= bound, (f"{name}.step with τ allocated {allocated} bytes; its new state holds "
                                f"{nbytes(new_state)} (bound {bound})")


# The selective and matrix-state mixers form their per-event arrays from the event itself; what a step allocates
# beyond the new state, measured at SIZE (batch 1 and 2, with and without τ), in states and (b, H) vectors:
# S6 1.6 states (λΔ_t, Ā_t becomes the new state);
# S7 the real parts of B_t and C_t (4NH numbers per row, 2H states: inherent to the layer, which makes them from
# the event) and 11 states (N = 32 complex at batch 1: the vectors of its projections weigh most);
# RGLRU 36, GLA 50, GatedDeltaNet 74, DeltaProduct 138 vectors at most (gates, projections, normalisations and
# the head-wise products of the recurrences in torch_backend/layers/matrix_state.py, all (b, H) or smaller; their
# states are (b, H) or (b, h, d_k, d_v) = 4 vectors, so a ratio to the state says little).
# Bounds: (states, vectors) on top of the new state, about 15% above the measurement.
SELECTIVE_STEP_BOUNDS = {"S6": (2, 0), "S7": (13, 0), "RGLRU": (0, 40), "GLA": (0, 58), "GatedDeltaNet": (0, 85),
                         "DeltaProduct": (0, 160)}


def inherent_bytes(layer, batch):
    """Bytes a step must form from the event itself: S7's B_t and C_t parts (b, 4NH) real; 0 for the others."""
    if type(layer).__name__ != "S7":
        return 0
    return batch * 4 * layer.d_state * layer.d_model * torch.finfo(layer.dtype).bits // 8


@pytest.mark.parametrize("with_tau", [False, True])
@pytest.mark.parametrize("batch", [1, BATCH])
@pytest.mark.parametrize("name", list(SELECTIVE_MIXERS))
def test_a_selective_mixer_step_allocates_its_new_state_and_its_per_event_arrays(name, batch, with_tau):
    layer = build_mixer(name)
    x_t = torch.randn(batch, SIZE["d_model"], generator=torch.Generator().manual_seed(0))
    tau = torch.full((batch,), 0.7) if with_tau else None
    vector = batch * SIZE["d_model"] * x_t.element_size()
    with torch.no_grad():
        _, state = layer.step(x_t, layer.init_state(batch), tau)                  # the first event fills the cache
        (_, new_state), allocated = allocated_bytes(lambda: layer.step(x_t, state, tau))
    states, vectors = SELECTIVE_STEP_BOUNDS[name]
    held = nbytes(new_state)
    bound = (1 + states) * held + vectors * vector + inherent_bytes(layer, batch)
    assert allocated <= bound, (f"{name}.step allocated {allocated} bytes; its new state holds {held} "
                                f"(bound {bound})")


# The per-event discretisation of a step without autograd (discretize_event) against the reference stream, for
# every §2 method of the continuous-time mixers and the selective ones (with autograd on, a step takes
# `discretize` itself, which parity_tests/test_parity.py checks).
EVENT_FORMS = [(name, method) for name in ("S5", "S4D", "Centaurus", "S6", "S7")
               for method in ("zoh", "bilinear", "exp_euler", "async", "dirac")] + [("LRU", None)]


def event_discretisation_inputs(method, complex_lambda, selective):
    """(λ (4, 5), Δ (4, 1) or a selective (b=4, 4, 1), τ (4,)) float64 tensors for the per-event discretisation:
    Δ down to 1e-4 (tiny λΔ_A) and τ with a dropped gap, a tiny one, Δ_A > 1 and λΔ_A = −inf."""
    rng = np.random.default_rng(0)
    Lambda = -rng.uniform(0.01, 3, (4, 5)) + (1j * rng.normal(scale=20, size=(4, 5)) if complex_lambda else 0)
    Lambda = np.exp(Lambda) if method == "none" else Lambda                        # `none`: already discrete
    dt = np.exp(rng.uniform(-9, 0, (4, 4, 1) if selective else (4, 1)))           # (4, 1) or (b, 4, 1)
    tau = np.array([0.0, 1e-5, 40.0, 1e308])                                       # (b,)
    return tuple(torch.as_tensor(a) for a in (Lambda, dt, tau))


@pytest.mark.parametrize("selective", [False, True])
@pytest.mark.parametrize("complex_lambda", [True, False])
@pytest.mark.parametrize("method", ["zoh", "bilinear", "exp_euler", "async", "dirac", "none"])
def test_the_per_event_discretisation_equals_discretize_on_one_event(method, complex_lambda, selective):
    Lambda, dt, tau = event_discretisation_inputs(method, complex_lambda, selective)
    dt_L = dt[:, None] if selective else dt                                        # discretize's (b, L, S...) form
    expected = [torch.broadcast_to(a, (4, 1, 4, 5))[:, 0] for a in discretize(Lambda, dt_L, method, tau[:, None])]
    actual = discretize_event(Lambda, dt, method, tau)
    for name, a, e in zip(("Lambda_bar", "gamma_bar"), actual, expected):
        assert_close(torch.broadcast_to(a, e.shape).numpy(), e.numpy(), "float64", what=f"{method} {name}")


@pytest.mark.parametrize("name, method", EVENT_FORMS)
def test_a_step_without_autograd_streams_events_like_the_reference(name, method):
    kwargs = {"d_model": 3, "d_state": 4, **({} if method is None else {"discretization": method}),
              **({"sub_state_dim": 2} if name == "Centaurus" else {})}
    reference = getattr(reference_layers, name)(**kwargs, seed=1)
    layer = from_reference(reference)
    rng = np.random.default_rng(0)
    x, tau = rng.normal(size=(2, 6, 3)), np.exp(rng.uniform(-3, 2, (2, 6)))
    tau[0, 2] = tau[1, 4] = 0.0                                                    # dropped gaps
    state_r, state_t = reference.init_state(2), layer.init_state(2)
    with torch.no_grad():
        for t in range(6):
            y_r, state_r = reference.step(x[:, t], state_r, tau[:, t])
            y_t, state_t = layer.step(torch.as_tensor(x[:, t]), state_t, torch.as_tensor(tau[:, t]))
            assert_close(y_t.numpy(), y_r, "float64", what=f"{name} {method} event {t}")


def stream_model(mixers=("LRU", "S5", "S4D", "Centaurus")):
    """The benchmark's classifier (benchmarks/streaming.py) at a small size."""
    reference = ReferenceClassifier(input_dim=3, num_classes=4, n_layers=len(mixers), lrnn_cls=list(mixers),
                                    intermediate_pooling=["mean", "mean"] + ["none"] * (len(mixers) - 2),
                                    pooling_factor=2, pooling="mean", dropout=0.0, seed=0, **SIZE)
    return from_reference(reference, dtype=torch.float32).eval()


@pytest.mark.parametrize("batch", [1, BATCH])
@pytest.mark.parametrize("events", [3, 4])                         # a flush through three blocks; every block commits
def test_a_classifier_step_allocates_its_state_and_a_few_vectors(events, batch):
    model = stream_model()
    x = torch.randn(batch, events + 1, 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        state = model.init_state(batch)
        for t in range(events):
            _, state = model.step(x[:, t], state)
        (output, new_state), allocated = allocated_bytes(lambda: model.step(x[:, events], state))
    vector = batch * SIZE["d_model"] * x.element_size()
    bound = state_bytes(new_state) + nbytes(output) \
        + (len(model.blocks) * BLOCK_STEP_VECTORS + STREAM_STEP_VECTORS) * vector
    assert allocated <= bound, (f"one event allocated {allocated} bytes; the state returned holds "
                                f"{state_bytes(new_state)} (bound {bound})")


@pytest.mark.parametrize("batch", [1, BATCH])
@pytest.mark.parametrize("events", [3, 4])
def test_a_classifier_step_with_an_event_gap_allocates_its_state_and_each_mixers_per_event_arrays(events, batch):
    model = stream_model()
    x = torch.randn(batch, events + 1, 3, generator=torch.Generator().manual_seed(0))
    tau = torch.full((batch, events + 1), 0.7)
    with torch.no_grad():
        state = model.init_state(batch)
        for t in range(events):
            _, state = model.step(x[:, t], state, tau[:, t])
        (output, new_state), allocated = allocated_bytes(lambda: model.step(x[:, events], state, tau[:, events]))
    vector = batch * SIZE["d_model"] * x.element_size()
    per_event_arrays = TAU_STEP_STATES * nbytes(tuple(new_state["mixers"]))         # at most one step per block
    bound = state_bytes(new_state) + nbytes(output) + per_event_arrays \
        + (len(model.blocks) * (BLOCK_STEP_VECTORS + TAU_CHECK_VECTORS) + STREAM_STEP_VECTORS) * vector
    assert allocated <= bound, (f"one event with τ allocated {allocated} bytes; the state returned holds "
                                f"{state_bytes(new_state)} (bound {bound})")


def test_a_float32_stream_with_event_gaps_without_autograd_equals_the_forward_on_every_prefix():
    model = stream_model()                                                        # float32, as deployed
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, 3, generator=generator)
    tau = torch.rand(2, 7, generator=generator) * 2
    tau[0, 3] = tau[1, 5] = 0.0                                                   # dropped gaps
    with torch.no_grad():
        state = model.init_state(2)
        for t in range(7):
            y_t, state = model.step(x[:, t], state, tau[:, t])
            expected = model(x[:, :t + 1], integration_timesteps=tau[:, :t + 1])
            assert_close(y_t.numpy(), expected.numpy(), "float32", what=f"event {t}")


def change_in_place(layer):
    """Scale every parameter and buffer by 1.25 in place (version counters move; storages stay)."""
    with torch.no_grad():
        for tensor in (*layer.parameters(), *layer.buffers()):
            tensor.mul_(1.25)


@pytest.mark.parametrize("name", list(MIXERS))
def test_a_parameter_changed_between_two_steps_is_seen_by_the_next_step(name):
    layer = build_mixer(name).double()
    x_t = torch.randn(BATCH, SIZE["d_model"], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, state = layer.step(x_t, layer.init_state(BATCH))                       # cached arrays of the old values
        y_before, _ = layer.step(x_t, state)
        change_in_place(layer)
        y_cached, state_cached = layer.step(x_t, state)
    with torch.enable_grad():                                                     # autograd on: nothing is cached
        y_uncached, state_uncached = layer.step(x_t, state)
    assert not torch.equal(y_cached, y_before)
    assert torch.equal(y_cached, y_uncached.detach())
    assert torch.equal(state_cached, state_uncached.detach())


# With autograd on a step takes `discretize` (not discretize_event), so the uncached path of the per-event form
# is a twin built from the changed values, stepped without autograd.
@pytest.mark.parametrize("with_tau", [False, True])
@pytest.mark.parametrize("name", TAU_MIXERS + ["S6", "S7"])
def test_a_parameter_changed_between_two_events_is_seen_by_the_next_per_event_step(name, with_tau):
    layer = build_mixer(name).double()
    x_t = torch.randn(BATCH, SIZE["d_model"], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    tau = torch.tensor([0.0, 2.5], dtype=torch.float64) if with_tau else None
    with torch.no_grad():
        _, state = layer.step(x_t, layer.init_state(BATCH), tau)                  # cached arrays of the old values
        y_before, _ = layer.step(x_t, state, tau)
        change_in_place(layer)
        y_cached, state_cached = layer.step(x_t, state, tau)
        twin = type(layer).from_params(layer.config, layer.params)
        y_uncached, state_uncached = twin.step(x_t, state, tau)
    assert not torch.equal(y_cached, y_before)
    assert torch.equal(y_cached, y_uncached)
    assert torch.equal(state_cached, state_uncached)


def test_a_dtype_conversion_drops_the_cached_arrays():
    layer = build_mixer("S4D")
    x_t = torch.randn(BATCH, SIZE["d_model"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        layer.step(x_t, layer.init_state(BATCH))                                  # float32 arrays cached
        layer.double()
        y_cached, _ = layer.step(x_t.double(), layer.init_state(BATCH))
    y_uncached, _ = layer.step(x_t.double(), layer.init_state(BATCH))
    assert y_cached.dtype == torch.float64
    assert torch.equal(y_cached, y_uncached.detach())


def test_a_workspace_is_made_once_per_shape_and_dropped_by_a_conversion():
    layer = build_mixer("S4D")
    first = layer._workspace("A_bar", (2, 3), torch.complex64)
    assert layer._workspace("A_bar", (2, 3), torch.complex64) is first            # kept between calls
    assert layer._workspace("A_bar", (4, 3), torch.complex64) is not first        # one buffer per shape in use
    assert layer._workspace("gamma_bar", (2, 3), torch.complex64) is not first
    layer.double()
    converted = layer._workspace("A_bar", (2, 3), torch.complex128)
    assert converted.dtype == torch.complex128 and converted is not first
    assert all(buffer.dtype == torch.complex128 for buffer in layer.__dict__["_scratch"].values())


# ----------------------------------------------------------------------------- inplace=True
# step(..., inplace=True) writes the new state into the given tensors, with its per-event temporaries in the
# layer's workspace (Layer._workspace): Ā_t, γ̄_t (discretize_event's out=), the event in the complex dtype,
# the drive and the read-out's C x_t. What it allocates per event is then the output y_t, a few (b, H) or
# smaller arrays (the checks' reductions, masks of τ) and, for zoh with τ, a boolean mask of the tiny |λΔ_A|
# (1 byte per state entry).
INPLACE_MIXERS = {**MIXERS, "S5-zoh": {"discretization": "zoh"}, "S5-bilinear": {"discretization": "bilinear"},
                  "S4D-exp_euler": {"discretization": "exp_euler"}, "S4D-async": {"discretization": "async"},
                  "Centaurus-zoh": {"sub_state_dim": 4, "discretization": "zoh"},
                  "Centaurus-neck": {"mode": "neck", "sub_state_dim": 4},
                  "Centaurus-full": {"mode": "full", "d_model": 4, "d_state": 16, "sub_state_dim": 2},
                  "LSSL-zoh": {"discretization": "zoh"}}
INPLACE_CASES = [(name, with_tau) for name in INPLACE_MIXERS for with_tau in (False, True)
                 if not (with_tau and name == "MultiresConv")]                   # MultiresConv takes no τ
# LSSL with τ has a dense per-row step: bilinear solves (I − dA/2) x' = (I + dA/2) x + d B u with the matrix, its
# LU factors and the right side in workspaces; zoh forms Ā_t = expm(τΔA) (b, H, N, N) in workspaces
# (`matrix_exp_into`: Padé scaling and squaring) and solves by A on cached LU factors. Both within 1.0 state.


def build_inplace_mixer(name):
    cls = getattr(torch_backend, name.split("-")[0])
    kwargs = {**SIZE, **INPLACE_MIXERS[name]}
    if name in NO_D_STATE:
        kwargs.pop("d_state")
    return cls(**kwargs, seed=0).eval()


@pytest.mark.parametrize("name, with_tau", INPLACE_CASES)
def test_an_inplace_step_writes_the_functional_step_into_the_given_state(name, with_tau):
    layer = build_inplace_mixer(name).double()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, 4, layer.d_model, dtype=torch.float64, generator=generator)
    tau = torch.rand(BATCH, 4, dtype=torch.float64, generator=generator) * 2
    tau[0, 1] = 0.0                                                               # a dropped gap
    with torch.no_grad():
        functional, given = layer.init_state(BATCH), layer.init_state(BATCH)
        for t in range(4):
            tau_t = tau[:, t] if with_tau else None
            y_f, functional = layer.step(x[:, t], functional, tau_t)
            y_i, returned = layer.step(x[:, t], given, tau_t, inplace=True)
            assert returned is given
            assert_close(y_i.numpy(), y_f.numpy(), "float64", what=f"{name} output at event {t}")
            assert_close(given.numpy(), functional.numpy(), "float64", what=f"{name} state at event {t}")


@pytest.mark.parametrize("name", list(INPLACE_MIXERS))
def test_an_inplace_step_refuses_autograd_and_a_state_it_would_convert(name):
    layer = build_inplace_mixer(name)                                             # float32
    x_t = torch.zeros(BATCH, layer.d_model)
    state = layer.init_state(BATCH)
    with pytest.raises(ValueError, match="autograd"):
        layer.step(x_t, state, inplace=True)
    other = state.to(torch.complex128 if state.is_complex() else torch.float64)
    with torch.no_grad(), pytest.raises(TypeError, match="the module computes in torch.float32"):
        layer.step(x_t, other, inplace=True)                                      # the state check's own rule
    for converted in (state.numpy(), state.real.to(torch.int64)):                 # accepted, but converted: a copy
        with torch.no_grad(), pytest.raises(ValueError, match="inplace=True"):   # would take the new state
            layer.step(x_t, converted, inplace=True)


@pytest.mark.parametrize("batch", [1, 64])
@pytest.mark.parametrize("name, with_tau", INPLACE_CASES)
def test_an_inplace_step_allocates_at_most_its_state(name, with_tau, batch):
    layer = build_inplace_mixer(name)
    x_t = torch.randn(batch, layer.d_model, generator=torch.Generator().manual_seed(0))
    tau = torch.full((batch,), 0.7) if with_tau else None
    with torch.no_grad():
        state = layer.init_state(batch)
        layer.step(x_t, state, tau, inplace=True)                                 # fills the cache, workspace
        (_, returned), allocated = allocated_bytes(lambda: layer.step(x_t, state, tau, inplace=True))
    bound = nbytes(state)
    assert returned is state
    assert allocated <= bound, (f"{name}.step(inplace=True) allocated {allocated} bytes; its state holds "
                                f"{nbytes(state)} (bound {bound})")


@pytest.mark.parametrize("row", ["float64", "float32"])
def test_the_matrix_exponential_into_workspaces_equals_scipys(row):
    """LSSL's HiPPO A (N = 32, ‖A‖₁ ≈ 800) at scales 0 … 60: from none to 14 squarings in one batch, each matrix
    its own; against SciPy's expm in float64 at the dtype's row (torch's matrix_exp meets the same row)."""
    from scipy.linalg import expm
    A = reference_layers.LSSL(d_model=2, d_state=32, seed=0).params["A"]                # (N, N)
    scale = np.array([[0.0, 1e-6, 1e-3], [0.05, 1.0, 60.0]])                            # (2, 3)
    buffers = {}

    def workspace(name, shape, dtype):
        return buffers.setdefault((name, tuple(shape), dtype), torch.empty(shape, dtype=dtype))

    precision = getattr(torch, row)
    out = torch.empty(2, 3, 32, 32, dtype=precision)
    returned = matrix_exp_into(torch.tensor(A, dtype=precision), torch.tensor(scale, dtype=precision), workspace, out)
    assert returned is out
    expected = expm(scale[..., None, None] * A)                                         # (2, 3, N, N)
    assert_close(out.double().numpy(), expected, row, what=f"matrix_exp_into ({row})")


@pytest.mark.parametrize("selective", [False, True])
@pytest.mark.parametrize("complex_lambda", [True, False])
@pytest.mark.parametrize("method", ["zoh", "bilinear", "exp_euler", "async", "dirac", "none"])
def test_the_per_event_discretisation_into_workspaces_equals_the_allocating_one(method, complex_lambda, selective):
    Lambda, dt, tau = event_discretisation_inputs(method, complex_lambda, selective)
    expected = discretize_event(Lambda, dt, method, tau)                           # the allocating form
    out = (torch.empty((4, 4, 5), dtype=Lambda.dtype), torch.empty((4, 4, 5), dtype=Lambda.dtype))
    with torch.no_grad():
        actual = discretize_event(Lambda, dt, method, tau, out=out, scratch=torch.empty((4, 4, 5), dtype=torch.float64))
    assert actual[0] is out[0] and actual[1] is out[1]                             # async, dirac: γ̄ formed there
    for name, a, e in zip(("Lambda_bar", "gamma_bar"), actual, expected):
        assert_close(a.numpy(), torch.broadcast_to(e, a.shape).numpy(), "float64", what=f"{method} {name}")


def test_the_per_event_discretisation_into_workspaces_refuses_autograd_and_a_missing_scratch():
    Lambda, dt, tau = event_discretisation_inputs("zoh", True, False)
    out = (torch.empty((4, 4, 5), dtype=Lambda.dtype), torch.empty((4, 4, 5), dtype=Lambda.dtype))
    with torch.no_grad(), pytest.raises(ValueError, match="method='zoh' needs scratch="):
        discretize_event(Lambda, dt, "zoh", tau, out=out)
    with pytest.raises(ValueError, match="autograd cannot follow"):
        discretize_event(Lambda.requires_grad_(), dt, "exp_euler", tau, out=out)


@pytest.mark.parametrize("with_tau", [False, True])
@pytest.mark.parametrize("factor", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("pooling, intermediate", [("mean", ["mean", "max", "none", "stride"]),
                                                   ("max", ["stride", "mean", "max", "none"]),
                                                   ("last", ["max", "none", "stride", "mean"])])
def test_an_inplace_stream_equals_forward_on_every_prefix_and_returns_the_given_state(pooling, intermediate,
                                                                                       factor, with_tau):
    reference = ReferenceClassifier(input_dim=2, num_classes=3, d_model=4, d_state=3, n_layers=4,
                                    lrnn_cls=["LRU", "S5", "S4D", "Centaurus"],
                                    lrnn_params=[{}, {}, {}, {"sub_state_dim": 1}], intermediate_pooling=intermediate,
                                    pooling_factor=factor, pooling=pooling, seed=3)
    model = from_reference(reference).eval()                                      # float64
    generator = torch.Generator().manual_seed(factor)
    x = torch.randn(2, 13, 2, dtype=torch.float64, generator=generator)
    tau = torch.rand(2, 13, dtype=torch.float64, generator=generator) * 2
    tau[0, 3] = tau[1, 0] = tau[1, 7] = 0.0                                       # dropped gaps
    with torch.no_grad():
        state = model.init_state(2)
        mixer_states = list(state["mixers"])
        for n in range(1, 14):
            y, returned = model.step(x[:, n - 1], state, tau[:, n - 1] if with_tau else None, inplace=True)
            assert returned is state and all(a is b for a, b in zip(state["mixers"], mixer_states))
            expected = model(x[:, :n], integration_timesteps=tau[:, :n] if with_tau else None)
            assert_close(y.numpy(), expected.numpy(), "float64", what=f"output after {n} events")


@pytest.mark.parametrize("row", ["float64", "float32"])
def test_the_in_place_layer_norm_and_gelu_equal_torchs(row):
    """nn.layer_norm_ and nn.gelu_ (the in-place stream's block tail) against torch.nn.LayerNorm and F.gelu:
    LayerNorm to the dtype's row (another order of the same sums), GELU bit for bit (the same kernel)."""
    from torch_backend import nn
    precision = getattr(torch, row)
    generator = torch.Generator().manual_seed(0)
    norm = torch.nn.LayerNorm(24, eps=nn.LAYER_NORM_EPS).to(precision)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(24, generator=generator))
        norm.bias.copy_(torch.randn(24, generator=generator))
        x = 3 + 5 * torch.randn(5, 24, generator=generator, dtype=precision)           # (b, H), off-centre
        expected_norm, expected_gelu = norm(x), torch.nn.functional.gelu(x)
        assert_close(nn.layer_norm_(x.clone(), norm).numpy(), expected_norm.numpy(), row, what="layer_norm_")
        assert torch.equal(nn.gelu_(x.clone()), expected_gelu)


def test_an_inplace_stream_refuses_autograd():
    model = stream_model()
    state = model.init_state(1)
    with pytest.raises(ValueError, match="autograd"):
        model.step(torch.zeros(1, 3), state, inplace=True)


# The benchmark's stack (stream_model: mean pooling by 2 after blocks 0 and 1): event n (0-based) closes no
# window for n = 4, the window of stage 0 for n = 5, those of stages 0 and 1 for n = 7 (a flush through 3, 2
# and 1 blocks above the open window before them, none after the last). The state returned: mixer states,
# window values, τ sums and the final pooling value (`state_bytes`); the scratch states of the flush
# (state["scratch"]) are workspace, not state.
# In place an event allocates per block only the mixer's output y_t (b, H) (the activation, residual sum and
# LayerNorm are written over it, pooled elements go to the model's workspace), plus the embedding and the head's
# output: within the state for the benchmark's mix and for stacks of one small-state mixer (LRU, S5: N complex
# numbers per row, here N = 2H).
@pytest.mark.parametrize("mixers", [("LRU", "S5", "S4D", "Centaurus"), ("LRU",) * 4, ("S5",) * 4])
@pytest.mark.parametrize("with_tau", [False, True])
@pytest.mark.parametrize("batch", [1, 64])
@pytest.mark.parametrize("events", [4, 5, 7])
def test_an_inplace_classifier_step_allocates_at_most_the_state_it_returns(events, batch, with_tau, mixers):
    model = stream_model(mixers)
    x = torch.randn(batch, events + 1, 3, generator=torch.Generator().manual_seed(0))
    tau = torch.full((batch, events + 1), 0.7) if with_tau else None
    with torch.no_grad():
        state = model.init_state(batch)
        for t in range(events):
            model.step(x[:, t], state, None if tau is None else tau[:, t], inplace=True)
        (output, returned), allocated = allocated_bytes(
            lambda: model.step(x[:, events], state, None if tau is None else tau[:, events], inplace=True))
    assert returned is state
    assert allocated <= state_bytes(state), (f"one event allocated {allocated} bytes; the state returned "
                                             f"holds {state_bytes(state)}")
