"""All hypothesis strategies of the suite, in one module (STYLE 8).

Under the thorough profile (`--profile thorough` or LRNN_PROFILE=thorough) sequences get longer (up to
16 384 steps where a test allows a few hundred), batches and widths larger; the CI profile keeps them small.
"""
import os

import numpy as np
from hypothesis import strategies as st

THOROUGH = os.environ.get("LRNN_PROFILE", "ci") == "thorough"
LONG_LENGTHS = (1023, 1024, 4097, 16384)              # only drawn under the thorough profile
THOROUGH_SCALE = 5                                    # thorough examples per ci example (top-level conftest: 100 vs 20)


def examples(n):
    """max_examples of a property whose ci budget is n: n under the ci profile, THOROUGH_SCALE·n under thorough
    (a property never hard-codes a count the profile cannot scale)."""
    return n * (THOROUGH_SCALE if THOROUGH else 1)

PRIMES = (2, 3, 5, 7, 11, 13, 17, 31, 61, 127, 251)
POWERS_OF_TWO_NEAR = tuple(sorted({n for k in range(1, 9) for n in (2 ** k - 1, 2 ** k, 2 ** k + 1) if n >= 1}))


def sequence_lengths(max_len=300):
    """L >= 1 with 1, primes and 2^k ± 1 favoured, then anything up to max_len.

    Thorough profile: max_len × 4, plus lengths up to 16 384 for tests that allow >= 100 steps."""
    if THOROUGH:
        max_len *= 4
    special = [1] + [n for n in PRIMES + POWERS_OF_TWO_NEAR if n <= max_len]
    lengths = st.one_of(st.sampled_from(sorted(set(special))), st.integers(1, max_len))
    if THOROUGH and max_len >= 400:
        lengths = st.one_of(lengths, st.sampled_from(LONG_LENGTHS))
    return lengths


def widths(ci_max):
    """A width (d_model, d_state, ...) in [1, ci_max], three times larger under the thorough profile."""
    return st.integers(1, ci_max * (3 if THOROUGH else 1))


batch_sizes = st.integers(1, 6 if THOROUGH else 3)
seeds = st.integers(0, 2 ** 32 - 1)


def rng_from(seed):
    return np.random.default_rng(seed)


def stable_eigenvalues(rng, shape, max_radius=0.99):
    """Complex Ā with |Ā| <= max_radius (discrete, stable)."""
    radius = max_radius * np.sqrt(rng.uniform(0, 1, shape))
    return radius * np.exp(2j * np.pi * rng.uniform(0, 1, shape))


def continuous_eigenvalues(rng, shape):
    """Complex λ with Re λ < 0 spanning several decades."""
    return -np.exp(rng.uniform(-4, 2, shape)) + 1j * rng.normal(0, 5, shape)


def timesteps(rng, batch, L, zero_fraction=0.3):
    """τ >= 0 with exact zeros (dropped gaps) and a spread of gaps."""
    tau = np.exp(rng.uniform(-3, 1.5, (batch, L)))
    tau[rng.uniform(0, 1, (batch, L)) < zero_fraction] = 0.0
    return tau


def random_state(rng, zero):
    """A random state shaped like the zero state `zero` (complex where it is complex); a tuple state (S6's
    (conv state, h) with block=True) gets one random array per element."""
    if isinstance(zero, tuple):
        return tuple(random_state(rng, z) for z in zero)
    return rng.normal(size=zero.shape) + (1j * rng.normal(size=zero.shape) if np.iscomplexobj(zero) else 0)


def lengths_vector(rng, batch, L):
    """Valid lengths in [1, L], always including L when batch > 1."""
    lengths = rng.integers(1, L + 1, batch)
    if batch > 1:
        lengths[rng.integers(batch)] = L
    return lengths


# ----------------------------------------------------------------------------- layer configurations
# One entry per name in `reference.layers.REGISTRY` (the suites fail loudly for a name without one); a layer the
# project does not have joins through `register_layer` (the documented plug-in entry point, below).
# `configs()` returns a hypothesis strategy of small, valid constructor kwargs (seed included); the
# flags describe what the registry-driven properties may assume about the layer. Append new entries
# below; keep the configs small (H, N <= ~6) so each property runs in milliseconds.
from dataclasses import dataclass, field  # noqa: E402
from typing import Callable  # noqa: E402

CONTINUOUS_METHODS = ("zoh", "bilinear", "exp_euler", "async", "dirac")   # §2 methods for a continuous λ


@dataclass(frozen=True)
class LayerConfig:
    """How the suites draw and what they may assume about one layer. Only fields with defaults are ever added,
    so an entry written for an older suite keeps working."""
    configs: Callable                 # () -> strategy of constructor kwargs dicts
    linear: bool = True               # y is linear in (x, initial_state) jointly (False: LSSL's gelu read-out)
    timesteps: bool = True            # accepts integration_timesteps (False: the layer must raise on them)
    slow_decay: dict = field(default_factory=dict)   # kwargs overrides giving |Ā| close to 1 (long-L test)
    input_dependent: bool = False     # the transition depends on the input (selective/gated layers): no kernel
                                      # view, and no property that assumes y linear in x or in initial_state
    feedthrough: tuple = ("D",)       # parameters of a direct x -> y term, zeroed by the state-path property
    perturb: Callable = None          # (params, rng) -> {name: moved value}: extreme parameters beyond the
                                      # init (None: every parameter moved by a relative 20 % and a small shift)
    reference_class: type = None      # the reference class, for a layer registered from outside the project
    additive_input: bool = True       # a step adds its input term to the decayed state (False: the delta rule,
                                      # whose write also erases the old value along k)
    nan_causal: bool = True           # a non-finite input at step t leaves every output before t finite in the
                                      # backend's default method (False: a chunkwise method mixes the steps of a
                                      # chunk in one matrix product, so a NaN reaches the chunk's earlier outputs)
    variant_of: str = None            # a registry name: this entry is a variant of that layer (its configs fix an
                                      # option, e.g. block=True), a subject of its own built by that class
    readout_bound: Callable = None    # (reference layer, run) -> (run()'s result, (b, L, H) bound): the float32
                                      # §8 bound of the state path's output carried through a non-linear read-out
                                      # (e.g. `rms_norm_readout_bound`); None: y is held to the table as it is
    conv_window: bool = False         # the state carries a causal convolution's window of past inputs (a block's
                                      # conv), which moves with the event index: a zero gap does not hold it, and
                                      # feeding the gates it does not enter affinely


def register_layer(name, reference_class, config):
    """The plug-in entry point: add a layer the project does not have (or replace an entry) to every
    registry-driven property of the suites, from outside the project (e.g. in an adapter module, which the
    suite imports before collecting). `reference_class` is a class with the reference layer's API
    (constructor kwargs -> params, __call__, step, init_state, from_params, kernel if time-invariant);
    `config` a LayerConfig (its flags say which properties apply)."""
    if not isinstance(config, LayerConfig):
        raise TypeError(f"register_layer({name!r}): config must be a LayerConfig, got {type(config).__name__}")
    LAYER_CONFIGS[name] = LayerConfig(**{**config.__dict__, "reference_class": reference_class})


def layer_class(name):
    """The reference class of a suite layer: the registered one, else reference.layers.REGISTRY's (for a variant,
    the class of the layer it is a variant of)."""
    from reference.layers import REGISTRY
    entry = LAYER_CONFIGS.get(name)
    if entry is not None and entry.reference_class is not None:
        return entry.reference_class
    return REGISTRY[entry.variant_of if entry is not None and entry.variant_of else name]


def suite_layers():
    """Every layer the suites run over: the reference registry, its variants (e.g. "S6-block") and the layers
    registered from outside."""
    from reference.layers import REGISTRY
    extra = {n for n, c in LAYER_CONFIGS.items() if c.reference_class is not None or c.variant_of}
    return sorted(set(REGISTRY) | extra)


def _lru_configs():
    return st.fixed_dictionaries({
        "d_model": widths(4), "d_state": widths(6),
        "r_min": st.sampled_from([0.0, 0.4]), "r_max": st.sampled_from([0.9, 0.99, 1.0]),
        "max_phase": st.sampled_from([2 * np.pi, np.pi / 10]), "seed": seeds})


@st.composite
def _s5_configs(draw):
    d_state = draw(widths(6))
    conj_sym = draw(st.booleans())
    # block size b = (2N if conj_sym else N) / blocks, and b must be even under conj_sym: blocks | N
    blocks = draw(st.sampled_from([k for k in range(1, d_state + 1) if d_state % k == 0]))
    return {"d_model": draw(widths(4)), "d_state": d_state,
            "discretization": draw(st.sampled_from(CONTINUOUS_METHODS)), "conj_sym": conj_sym,
            "blocks": blocks, "step_rescale": draw(st.sampled_from([1.0, 0.5])),
            "C_init": draw(st.sampled_from(["trunc_standard_normal", "lecun_normal", "complex_normal"])),
            "clip_eigs": draw(st.booleans()), "seed": draw(seeds)}


def _s4d_configs():
    return st.fixed_dictionaries({
        "d_model": widths(4), "d_state": widths(6),
        "init": st.sampled_from(["legs", "lin", "inv", "real"]),
        "discretization": st.sampled_from(CONTINUOUS_METHODS), "seed": seeds})


def _extreme_log_dt(params, rng):
    """log Δ from 1e-6 to 1e-1 (log-uniform) for every Δ of the layer."""
    return {"log_dt": rng.uniform(np.log(1e-6), np.log(1e-1), params["log_dt"].shape)}


def _lru_perturb(params, rng):
    """Eigenvalues at the ring edges: |λ| = exp(−exp(ν)) within 1e-6 of 1, or below 0.01; any phase."""
    shape = params["nu_log"].shape
    nu_log = np.where(rng.uniform(size=shape) < 0.5, np.log(rng.uniform(1e-7, 1e-6, shape)), np.log(5.0))
    return {"nu_log": nu_log, "theta_log": np.log(rng.uniform(1e-3, 2 * np.pi, shape))}


def _s5_perturb(params, rng):
    """Re Λ from −1e-3 to +0.1 (what clip_eigs exists for) and extreme Δ."""
    return {"Lambda_re": rng.uniform(-1e-3, 0.1, params["Lambda_re"].shape), **_extreme_log_dt(params, rng)}


def perturbed_params(name, params, rng):
    """Every parameter moved away from its initial value: a relative 20 % move plus a small shift, then the
    layer's own extremes (LayerConfig.perturb). Frozen parameters move too: the backend must use the values
    it was given."""
    moved = {k: v * (1 + 0.2 * rng.standard_normal(v.shape)) + 0.01 * rng.standard_normal(v.shape)
             for k, v in params.items()}
    hook = layer_config(name).perturb
    return {**moved, **(hook(params, rng) if hook is not None else {})}


LAYER_CONFIGS = {
    "LRU": LayerConfig(_lru_configs, slow_decay={"r_min": 0.999, "r_max": 0.9999}, perturb=_lru_perturb),
    "S5": LayerConfig(_s5_configs, slow_decay={"dt_min": 1e-4, "dt_max": 2e-4}, perturb=_s5_perturb),
    "S4D": LayerConfig(_s4d_configs, slow_decay={"dt_min": 1e-4, "dt_max": 2e-4}, perturb=_extreme_log_dt),
}


def layer_config(name):
    """The LayerConfig of a registry name; a name without an entry is an error, never a skip."""
    if name not in LAYER_CONFIGS:
        raise KeyError(f"no LAYER_CONFIGS entry for registry layer {name!r}: append one to "
                       f"parity_tests/strategies.py (have {', '.join(LAYER_CONFIGS)})")
    return LAYER_CONFIGS[name]


@st.composite
def _multiresconv_configs(draw):
    """Small MultiresConv configs: k in 2..4, depth from a small max_len, fading or uniform memory."""
    from reference.layers.multiresconv import multires_depth, uniform_memory_max
    kernel_size, max_len = draw(st.integers(2, 4)), draw(st.integers(1, 40))
    config = {"d_model": draw(st.integers(1, 4)), "kernel_size": kernel_size, "max_len": max_len,
              "memory": draw(st.sampled_from(["fading", "uniform"])), "seed": draw(seeds)}
    if config["memory"] == "uniform":
        largest = uniform_memory_max(kernel_size, multires_depth(kernel_size, max_len))
        config["memory_size"] = draw(st.integers(1, largest))
    return config


LAYER_CONFIGS["MultiresConv"] = LayerConfig(_multiresconv_configs, timesteps=False)


# ----------------------------------------------------------------------------- pooling and classifier (SPEC §5, §6)
@st.composite
def pooling_inputs(draw, max_len=40, with_lengths=None, with_timesteps=None):
    """(x (b, L, H), lengths or None, τ or None, stride in [1, L + 2]) with garbage in padded positions."""
    rng = rng_from(draw(seeds))
    batch, L, H = draw(batch_sizes), draw(sequence_lengths(max_len)), draw(st.integers(1, 3))
    stride = draw(st.integers(1, L + 2))
    x = rng.normal(size=(batch, L, H))                                              # (b, L, H)
    use_lengths = draw(st.booleans()) if with_lengths is None else with_lengths
    use_timesteps = draw(st.booleans()) if with_timesteps is None else with_timesteps
    lengths = lengths_vector(rng, batch, L) if use_lengths else None
    tau = timesteps(rng, batch, L) if use_timesteps else None
    return x, lengths, tau, stride


def _mixer_params(draw, name, d_model):
    """Per-layer classifier kwargs drawn from the layer's LAYER_CONFIGS entry (without d_model and seed);
    {} when the entry's size rules do not hold at the classifier's d_model."""
    from reference.layers import REGISTRY
    if name not in LAYER_CONFIGS:
        return {}
    kwargs = {k: v for k, v in draw(LAYER_CONFIGS[name].configs()).items() if k not in ("d_model", "seed")}
    try:
        REGISTRY[name](d_model=d_model, seed=0, **kwargs)
    except ValueError:
        return {}
    return kwargs


@st.composite
def classifier_configs(draw, max_layers=3, max_width=6):
    """Small valid Classifier kwargs: a random layer list from the registry with per-layer arguments,
    per-layer (or shared) intermediate pooling, token or feature input, classification or regression."""
    from reference.layers import REGISTRY
    from reference.pooling import FINAL_MODES, INTERMEDIATE_MODES
    n_layers = draw(st.integers(1, max_layers))
    d_model, d_state = draw(st.integers(1, max_width)), draw(st.integers(1, max_width))
    per_layer = draw(st.booleans())                     # per-layer lists, or one value for every layer
    names = [draw(st.sampled_from(sorted(REGISTRY))) for _ in range(n_layers if per_layer else 1)]
    shared_params = None if per_layer else _mixer_params(draw, names[0], d_model)
    names = names * (1 if per_layer else n_layers)
    config = {
        "input_dim": draw(st.integers(1, 4)), "num_classes": draw(st.integers(0, 4)),
        "output_dim": draw(st.integers(1, 3)), "d_model": d_model, "d_state": d_state, "n_layers": n_layers,
        "lrnn_cls": names if per_layer else names[0],
        "pooling": draw(st.sampled_from(FINAL_MODES)), "dropout": draw(st.sampled_from([0.0, 0.1])),
        "intermediate_pooling": ([draw(st.sampled_from(INTERMEDIATE_MODES)) for _ in names] if per_layer
                                 else draw(st.sampled_from(INTERMEDIATE_MODES))),
        "pooling_factor": [draw(st.integers(1, 4)) for _ in names] if per_layer else draw(st.integers(1, 4)),
        "lrnn_params": [_mixer_params(draw, name, d_model) for name in names] if per_layer else shared_params,
        "activation": draw(st.sampled_from(["gelu", "none"])), "seed": draw(seeds),
    }
    if draw(st.booleans()):                                                         # token input
        vocab_size = draw(st.integers(2, 10))
        config.update(vocab_size=vocab_size, embedding_dim=draw(st.one_of(st.none(), st.integers(1, max_width))),
                      max_position_embeddings=draw(st.one_of(st.none(), st.integers(1, 40))),
                      padding_idx=draw(st.one_of(st.none(), st.integers(0, vocab_size - 1))))
    return config


@st.composite
def classifier_inputs(draw, config, max_len=40, with_lengths=None, with_timesteps=None):
    """(x, lengths or None, τ or None) fitting a classifier config; τ only when every mixer accepts it."""
    from reference.layers import REGISTRY
    rng = rng_from(draw(seeds))
    batch, L = draw(batch_sizes), draw(sequence_lengths(max_len))
    if config.get("vocab_size") is not None:
        L = min(L, config.get("max_position_embeddings") or L)
        x = rng.integers(0, config["vocab_size"], (batch, L))                       # (b, L) token ids
    else:
        x = rng.normal(size=(batch, L, config["input_dim"]))                        # (b, L, input_dim)
    names = config["lrnn_cls"] if isinstance(config["lrnn_cls"], list) else [config["lrnn_cls"]]
    accepts = all(getattr(REGISTRY.get(n, None), "accepts_timesteps", True) for n in names)
    use_lengths = draw(st.booleans()) if with_lengths is None else with_lengths
    use_timesteps = accepts and (draw(st.booleans()) if with_timesteps is None else with_timesteps)
    lengths = lengths_vector(rng, batch, L) if use_lengths else None
    tau = timesteps(rng, batch, L) if use_timesteps else None
    return x, lengths, tau


@st.composite
def _centaurus_configs(draw):
    """Small Centaurus configs over the four modes and the aliases pw, s5, with the size rules met
    (dws: d_state == d_model; full: d_state == d_model**2) and every continuous discretisation."""
    mode = draw(st.sampled_from(["neck", "pointwise", "pw", "s5", "dws", "full"]))
    d_model = draw(st.integers(1, 3))
    free_d_state = draw(st.integers(1, 4))
    d_state = {"dws": d_model, "full": d_model ** 2}.get(mode, free_d_state)
    return {"d_model": d_model, "d_state": d_state, "sub_state_dim": draw(st.integers(1, 3)), "mode": mode,
            "discretization": draw(st.sampled_from(CONTINUOUS_METHODS)), "seed": draw(seeds)}


def _lssl_configs():
    return st.fixed_dictionaries({
        "d_model": st.integers(1, 3), "d_state": st.integers(1, 5), "channels": st.sampled_from([1, 2]),
        "discretization": st.sampled_from(["bilinear", "zoh"]), "learn_A": st.booleans(), "seed": seeds})


# Centaurus' Δ is fixed by its init (geomspace(1e-3, 1e-1)), so |Ā| is already in [0.95, 0.9995].
LAYER_CONFIGS["Centaurus"] = LayerConfig(_centaurus_configs)
# LSSL's long-L test uses bilinear: zoh pays one scipy expm (~0.25 ms) per distinct step τ_t·Δ_h and per step().
LAYER_CONFIGS["LSSL"] = LayerConfig(_lssl_configs, linear=False,
                                    slow_decay={"dt_min": 1e-4, "dt_max": 2e-4, "discretization": "bilinear"})


# ----------------------------------------------------------------------------- initialisation (test_init.py)
@st.composite
def lru_rings(draw):
    """LRU ring arguments 0 <= r_min <= r_max <= 1 (r_min < 1) and 0 < max_phase <= 2π, with the edges included."""
    r_max = draw(st.one_of(st.sampled_from([1.0, 0.9999, 0.5]), st.floats(0.01, 1.0)))
    r_min = draw(st.one_of(st.sampled_from([0.0, r_max]), st.floats(0.0, r_max))) if r_max < 1 else \
        draw(st.one_of(st.just(0.0), st.floats(0.0, 0.999)))
    max_phase = draw(st.one_of(st.sampled_from([2 * np.pi, np.pi / 10]), st.floats(1e-3, 2 * np.pi)))
    return {"r_min": r_min, "r_max": r_max, "max_phase": max_phase}


# ----------------------------------------------------------------------------- scan problems (test_torch_scan.py)
def scan_problems(max_len=130):
    """Keyword arguments of `scan_problem` plus a seed: LTI or time-varying, real or complex, with or without h0."""
    return st.fixed_dictionaries({
        "seed": seeds, "batch": batch_sizes, "L": sequence_lengths(max_len), "N": st.integers(1, 4),
        "complex_": st.booleans(), "time_varying": st.booleans(), "with_h0": st.booleans(),
    })


def scan_problem(rng, batch, L, N, complex_=True, time_varying=True, with_h0=True):
    """a ((b, L, N) or (N,)) with |a| < 1, b (b, L, N), h0 (b, N) or None; complex or real."""
    shape = (batch, L, N) if time_varying else (N,)
    if complex_:
        a = stable_eigenvalues(rng, shape)
        b = rng.normal(size=(batch, L, N)) + 1j * rng.normal(size=(batch, L, N))
        h0 = rng.normal(size=(batch, N)) + 1j * rng.normal(size=(batch, N))
    else:
        a, b, h0 = rng.uniform(-0.99, 0.99, shape), rng.normal(size=(batch, L, N)), rng.normal(size=(batch, N))
    return a, b, (h0 if with_h0 else None)


# ----------------------------------------------------------------------------- S6 (SPEC §4.8)
@st.composite
def _s6_configs(draw):
    """Small bare S6 configs: every continuous discretisation, dt ranges from tiny to large steps, both dt inits
    (the Mamba mixer, block=True, is the variant "S6-block" below)."""
    dt_min = draw(st.sampled_from([1e-3, 1e-2, 0.5]))
    return {"d_model": draw(widths(4)), "d_state": draw(widths(4)),
            "dt_rank": draw(st.sampled_from(["auto", 1, 2])), "dt_min": dt_min,
            "dt_max": dt_min * draw(st.sampled_from([1.0, 10.0, 100.0])),
            "dt_init": draw(st.sampled_from(["random", "constant"])),
            "discretization": draw(st.sampled_from(CONTINUOUS_METHODS)), "seed": draw(seeds)}


@st.composite
def _s6_block_configs(draw):
    """Small Mamba mixers (block=True): expand 1–2, conv widths 1–4, with and without the biases."""
    return {**draw(_s6_configs()), "block": True, "expand": draw(st.integers(1, 2)), "d_conv": draw(st.integers(1, 4)),
            "conv_bias": draw(st.booleans()), "bias": draw(st.booleans())}


# S6 is not linear in x (Δ_t, B_t, C_t depend on it): the SPEC's LTI reduction (reference_tests/test_s6.py) replaces linearity.
LAYER_CONFIGS["S6"] = LayerConfig(_s6_configs, linear=False, input_dependent=True,
                                  slow_decay={"dt_min": 1e-4, "dt_max": 2e-4, "dt_scale": 0.1})
# The Mamba mixer joins every registry property as its own subject: its state is the pair (conv state, h), which
# the state properties draw, pass and compare element by element (`random_state`, `check`).
LAYER_CONFIGS["S6-block"] = LayerConfig(_s6_block_configs, linear=False, input_dependent=True, variant_of="S6",
                                        conv_window=True,
                                        slow_decay={"dt_min": 1e-4, "dt_max": 2e-4, "dt_scale": 0.1})


# ----------------------------------------------------------------------------- RG-LRU and S7 (SPEC §4.9, §4.10)
@st.composite
def _rglru_configs(draw):
    """Small bare RG-LRU configs (num_heads | d_model); the Griffin block is the variant "RGLRU-block" below."""
    d_model = draw(widths(4))
    min_rad, max_rad = draw(st.sampled_from([(0.9, 0.999), (0.3, 0.9)]))
    return {"d_model": d_model, "num_heads": draw(st.sampled_from([k for k in range(1, d_model + 1) if d_model % k == 0])),
            "c": draw(st.sampled_from([8.0, 2.0])), "min_rad": min_rad, "max_rad": max_rad,
            "w_init_variance_scale": draw(st.sampled_from([1.0, 0.25])), "seed": draw(seeds)}


@st.composite
def _s7_configs(draw):
    """Small S7 configs: every continuous discretisation, conj_sym with valid blocks, both reparametrisations."""
    d_state = draw(widths(4))
    return {"d_model": draw(widths(3)), "d_state": d_state,
            "discretization": draw(st.sampled_from(CONTINUOUS_METHODS)), "conj_sym": draw(st.booleans()),
            "blocks": draw(st.sampled_from([k for k in range(1, d_state + 1) if d_state % k == 0])),
            "step_rescale": draw(st.sampled_from([1.0, 0.5])), "clip_eigs": draw(st.booleans()),
            "reparam": draw(st.sampled_from(["none", "stablessm"])), "dt_rank": draw(st.sampled_from(["auto", 2])),
            "seed": draw(seeds)}


@st.composite
def _rglru_block_configs(draw):
    """Small Griffin recurrent blocks: lru_width a multiple of num_heads, conv widths 1–4."""
    width, heads = draw(st.sampled_from([(2, 1), (4, 2), (6, 3), (3, 1)]))
    return {"d_model": draw(widths(4)), "num_heads": heads, "block": True, "lru_width": width,
            "conv1d_temporal_width": draw(st.integers(1, 4)), "c": draw(st.sampled_from([8.0, 2.0])),
            "seed": draw(seeds)}


# Input-dependent transitions (gates; Δ_t, B_t, C_t): reference_tests/test_rglru.py and test_s7.py check the LTI
# reductions instead of linearity (gate weights 0 ⇒ a fixed-λ recurrence; x_proj.weight = 0 ⇒ S5).
LAYER_CONFIGS["RGLRU"] = LayerConfig(_rglru_configs, linear=False, input_dependent=True, feedthrough=(),
                                     slow_decay={"min_rad": 0.999, "max_rad": 0.9999})
LAYER_CONFIGS["RGLRU-block"] = LayerConfig(_rglru_block_configs, linear=False, input_dependent=True, feedthrough=(),
                                           variant_of="RGLRU", conv_window=True, slow_decay={"min_rad": 0.999, "max_rad": 0.9999})
LAYER_CONFIGS["S7"] = LayerConfig(_s7_configs, linear=False, input_dependent=True,
                                  slow_decay={"dt_min": 1e-4, "dt_max": 2e-4})


# ----------------------------------------------------------------------------- matrix-state layers (SPEC §4.11)
def _head_sizes(draw):
    """d_model, n_heads, d_k, d_v: the head sizes drawn explicitly (no divisibility rule), so every d_model the
    classifier draws fits. Widths >= 2: with one component l2(z) = z/sqrt(z² + 1e-6) and the RMSNorm are sign
    functions whose float32 rounding near z = 0 is amplified up to 1/sqrt(eps) ≈ 1000, and with d_model = 1 every
    o_t has one direction, so y = W_out·n(o) can cancel to 1e-3 of its terms; the float32 table (scaled by max|y|)
    assumes neither. Size 1 is covered in float64 by reference_tests/test_matrix_state.py."""
    return {"d_model": draw(widths(4).map(lambda n: n + 1)), "n_heads": draw(st.integers(1, 3)),
            "d_k": draw(st.integers(2, 3)), "d_v": draw(st.integers(2, 3))}


@st.composite
def _gla_configs(draw):
    """Small gated GLA configs (use_gate=False, linear attention, refuses τ: reference_tests/test_matrix_state.py)."""
    return {**_head_sizes(draw), "use_gate": True,
            "gate_logit_normalizer": draw(st.sampled_from([16, 1.0])), "gate_low_rank_dim": draw(st.integers(1, 4)),
            "seed": draw(seeds)}


@st.composite
def _gated_deltanet_configs(draw):
    """Small gated configs, β ∈ [0, 1] or [0, 2] (DeltaNet, use_gate=False, refuses τ: tested separately)."""
    dt_min = draw(st.sampled_from([1e-3, 1e-2]))
    return {**_head_sizes(draw), "use_gate": True,
            "allow_neg_eigval": draw(st.booleans()), "dt_min": dt_min,
            "dt_max": dt_min * draw(st.sampled_from([1.0, 100.0])), "seed": draw(seeds)}


@st.composite
def _deltaproduct_configs(draw):
    """Small DeltaProduct configs with the forget gate, n_h in 1..3."""
    config = draw(_gated_deltanet_configs())
    config.pop("use_gate")
    return {**config, "n_householder": draw(st.integers(1, 3)), "use_forget_gate": True}


def rms_norm_readout_bound(layer, run):
    """(run(), the bound (b, L, H)) for a matrix-state layer y = W_out·concat_h RMSNorm(o_h) (SPEC §4.11.0).

    SPEC §4.11.7 budgets the float32 error of the heads' outputs o (≈ atol·max|o|); the per-head RMSNorm
    n = o/sqrt(mean(o²) + eps) ⊙ w has |∂n/∂o| <= |w|/rms, so a head whose output is near 0 magnifies that error
    by up to max|o|/sqrt(eps). Carried to y: bound[b, l, i] = max|o| · Σ_{h,d} |W_out[i, (h, d)]|·|w_d| / rms[b, l, h]
    (the o-level budget times the read-out's Jacobian bound, element by element; where the norm is well
    conditioned this is about max|y| and the table is unchanged). `run` calls the layer; its `read_out(o)` is
    observed to get o."""
    from reference.layers.matrix_state import NORM_EPS
    captured = []
    read_out = layer.read_out
    layer.read_out = lambda o: captured.append(o) or read_out(o)
    try:
        result = run()
    finally:
        del layer.read_out
    o = captured[0]                                                                      # (b, L, h, d_v)
    rms = np.sqrt(np.mean(o * o, axis=-1) + NORM_EPS)                                    # (b, L, h)
    h, d_v = o.shape[2], o.shape[3]
    W = np.abs(layer.params["W_out"]).reshape(-1, h, d_v) * np.abs(layer.params["norm_weight"])   # (H, h, d_v)
    return result, np.max(np.abs(o)) * np.einsum("ihd,blh->bli", W, 1.0 / rms)          # (b, L, H)


# Input-dependent transitions and a quadratic read-out (q_t·k_s): no linearity, no kernel view, no D term;
# reference_tests/test_matrix_state.py checks the SPEC's reductions, invariants and regression values instead.
LAYER_CONFIGS["GLA"] = LayerConfig(_gla_configs, linear=False, input_dependent=True, feedthrough=(),
                                   readout_bound=rms_norm_readout_bound,
                                   slow_decay={"gate_logit_normalizer": 1000.0}, nan_causal=False)
LAYER_CONFIGS["GatedDeltaNet"] = LayerConfig(_gated_deltanet_configs, linear=False, input_dependent=True,
                                             readout_bound=rms_norm_readout_bound,
                                             feedthrough=(), slow_decay={"dt_min": 1e-4, "dt_max": 2e-4},
                                             additive_input=False, nan_causal=False)
LAYER_CONFIGS["DeltaProduct"] = LayerConfig(_deltaproduct_configs, linear=False, input_dependent=True,
                                            readout_bound=rms_norm_readout_bound,
                                            feedthrough=(), slow_decay={"dt_min": 1e-4, "dt_max": 2e-4},
                                            additive_input=False, nan_causal=False)
