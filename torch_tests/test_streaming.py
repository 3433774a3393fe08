"""Torch-only checks of the streaming classifier (SPEC §6.1): the refusals name the block or the rule, as in
the reference, and a stream runs under torch.no_grad() and with gradients alike.

Memory of a step (torch only): in evaluation mode without autograd a step allocates its new state and a few
(b, H) vectors, never the parameter-derived arrays (Λ̄, complex B and C, …), which `Layer._cached` keeps
between events; the cache is never stale (an in-place parameter change is seen at the next event). With an
event gap τ, and in the selective mixers, a step adds only its per-event arrays (Ā_t, γ̄_t from
`discretize_event`, equal to `discretize` to rounding, and what the layer makes from the event)."""
import numpy as np
import pytest
import torch
from torch.profiler import ProfilerActivity, profile

import reference as reference_layers
import torch_backend
from reference import Classifier as ReferenceClassifier
from torch_backend import Classifier, from_reference
from torch_backend.discretize import discretize, discretize_event
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


def allocated_bytes(call):
    """(result, bytes allocated during `call()`: the sum of the positive self allocations of every op)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = call()
    return result, sum(max(event.self_cpu_memory_usage, 0) for event in prof.key_averages())


def tensor_bytes(tensors):
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def stream_state_bytes(state):
    """Bytes of the tensors a classifier's stream state holds (mixer states, window aggregates and τ sums)."""
    windows = [*state["windows"], state["final"]]
    return tensor_bytes([*state["mixers"], *(w[1] for w in windows), *(w[2] for w in windows if len(w) > 2)])


# With an event gap τ a continuous-time mixer also forms Ā_t and γ̄_t (each one state) from the cached Λ and Δ
# (torch_backend.discretize.discretize_event), with a few state-sized temporaries on the way (z = λΔ_A, Δ_A, and
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
    bound = (1 + REAL_READ_OUT_STATES.get(type(layer).__name__, 0)) * tensor_bytes([new_state]) \
        + MIXER_STEP_VECTORS * vector
    assert allocated <= bound, (f"{name}.step allocated {allocated} bytes; its new state holds "
                                f"{tensor_bytes([new_state])} (bound {bound})")


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
    bound = (1 + TAU_STEP_STATES) * tensor_bytes([new_state]) + (MIXER_STEP_VECTORS + TAU_CHECK_VECTORS) * vector
    assert allocated <= bound, (f"{name}.step with τ allocated {allocated} bytes; its new state holds "
                                f"{tensor_bytes([new_state])} (bound {bound})")


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
    state_bytes = tensor_bytes(new_state if isinstance(new_state, tuple) else [new_state])
    bound = (1 + states) * state_bytes + vectors * vector + inherent_bytes(layer, batch)
    assert allocated <= bound, (f"{name}.step allocated {allocated} bytes; its new state holds {state_bytes} "
                                f"(bound {bound})")


# The per-event discretisation of a step without autograd (discretize_event) against the reference stream, for
# every §2 method of the continuous-time mixers and the selective ones (with autograd on, a step takes
# `discretize` itself, which parity_tests/test_parity.py checks).
EVENT_FORMS = [(name, method) for name in ("S5", "S4D", "Centaurus", "S6", "S7")
               for method in ("zoh", "bilinear", "exp_euler", "async", "dirac")] + [("LRU", None)]


@pytest.mark.parametrize("selective", [False, True])
@pytest.mark.parametrize("complex_lambda", [True, False])
@pytest.mark.parametrize("method", ["zoh", "bilinear", "exp_euler", "async", "dirac", "none"])
def test_the_per_event_discretisation_equals_discretize_on_one_event(method, complex_lambda, selective):
    rng = np.random.default_rng(0)
    Lambda = -rng.uniform(0.01, 3, (4, 5)) + (1j * rng.normal(scale=20, size=(4, 5)) if complex_lambda else 0)
    Lambda = np.exp(Lambda) if method == "none" else Lambda                        # `none`: already discrete
    dt = np.exp(rng.uniform(-9, 0, (4, 4, 1) if selective else (4, 1)))           # Δ down to 1e-4: tiny λΔ_A
    tau = np.array([0.0, 1e-5, 40.0, 1e308])                                       # dropped gap, tiny, Δ_A > 1, λΔ_A = −inf
    Lambda, dt, tau = (torch.as_tensor(a) for a in (Lambda, dt, tau))
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
    bound = stream_state_bytes(new_state) + tensor_bytes([output]) \
        + (len(model.blocks) * BLOCK_STEP_VECTORS + STREAM_STEP_VECTORS) * vector
    assert allocated <= bound, (f"one event allocated {allocated} bytes; the state returned holds "
                                f"{stream_state_bytes(new_state)} (bound {bound})")


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
    per_event_arrays = TAU_STEP_STATES * tensor_bytes(new_state["mixers"])         # at most one step per block
    bound = stream_state_bytes(new_state) + tensor_bytes([output]) + per_event_arrays \
        + (len(model.blocks) * (BLOCK_STEP_VECTORS + TAU_CHECK_VECTORS) + STREAM_STEP_VECTORS) * vector
    assert allocated <= bound, (f"one event with τ allocated {allocated} bytes; the state returned holds "
                                f"{stream_state_bytes(new_state)} (bound {bound})")


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
