"""Torch-only checks of the streaming classifier (SPEC §6.1): the refusals name the block or the rule, as in
the reference, and a stream runs under torch.no_grad() and with gradients alike.

Memory of a step (torch only): in evaluation mode without autograd a step allocates its new state and a few
(b, H) vectors, never the parameter-derived arrays (Λ̄, complex B and C, …), which `Layer._cached` keeps
between events; the cache is never stale (an in-place parameter change is seen at the next event)."""
import numpy as np
import pytest
import torch
from torch.profiler import ProfilerActivity, profile

import torch_backend
from reference import Classifier as ReferenceClassifier
from torch_backend import Classifier, from_reference
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


def build_mixer(name):
    cls = getattr(torch_backend, name.split("-")[0])
    kwargs = {**SIZE, **MIXERS[name]}
    if name == "MultiresConv":
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
