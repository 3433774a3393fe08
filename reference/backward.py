"""The backward pass written by hand: chain-rule pieces every layer's `vjp` shares — SPEC §11.

A layer's `vjp(grad_y, x, ...)` re-runs the forward it needs, then walks back:

    read-out      y = κ·Re(C h) + D u      ⇒  G_h = κ·conj(C)ᵀ G_y,   G_C = κ Σ G_y conj(h)ᵀ,   G_D = Σ G_y u
    scan          h_t = Ā_t h_{t−1} + γ̄_t v_t   (`reference.scan.scan_vjp`: the reverse scan of §3)
    input         v_t = W u_t                ⇒  G_W = Σ G_v u_tᵀ,   G_u = Re(Wᴴ G_v)
    discretise    (Ā, γ̄)(λ, Δ)              (`reference.discretize.discretize_vjp`, one formula per method)
    parameters    λ = −exp(ν) + i·exp(θ), Δ = exp(log_dt), …   (each layer, a line per parameter)

Complex convention (SPEC §3, torch's): the gradient of a real loss with respect to a complex z is
G_z = ∂L/∂Re z + i·∂L/∂Im z; a real r with z = r·c receives Re(G_z·conj(c)); a holomorphic map w = f(z)
passes G_z = G_w·conj(f'(z)). So a `_re`/`_im` pair receives (Re G_z, Im G_z).
Padded positions (t ≥ len) get exactly zero gradient: G_y is zeroed there before anything runs back, and
every layer is causal. Integration timesteps are data and get no gradient.

Also here: the adjoint of the dense scan (LSSL), of a causal dilated convolution (MultiresConv), and the
classifier's loss and backward pass (`classifier_loss_and_grad`, called by `Classifier.loss_and_grad`); the
matrix-state recurrences' adjoints (GLA, the delta rule; SPEC §4.11) are in `layers/_matrix_state_backward.py`.
The adjoints re-run the sequential definitions and keep every state (O(b·L·state) memory): they are the exact
gradient oracle, not a memory-frugal trainer.

Glossary (SPEC §1): b batch, L length, H d_model, N d_state; S... the state's axes.
"""
import numpy as np

from .discretize import discretize, discretize_vjp
from .scan import scan, scan_vjp


def contract(subscripts, *operands):
    """np.einsum with its contraction order optimised: products of (b·L)-long axes go to BLAS (the plain
    einsum loop is ~10× slower on the mixed real/complex products of a backward pass)."""
    return np.einsum(subscripts, *operands, optimize=True)


# ----------------------------------------------------------------------------- small pieces
def mask_padding(grad_y, lengths):
    """G_y with the padded positions t >= len zeroed (no gradient flows from an unspecified output).

    grad_y: (b, L, ...) real; lengths: (b,) int or None. Returns float64 of grad_y's shape.
    """
    grad_y = np.asarray(grad_y, dtype=np.float64)
    if lengths is None:
        return grad_y
    valid = np.arange(grad_y.shape[1])[None, :] < np.asarray(lengths)[:, None]          # (b, L)
    return grad_y * valid.reshape(valid.shape + (1,) * (grad_y.ndim - 2))


def check_grad(grad_y, shape, name="grad_y"):
    """The incoming gradient must be real and have the output's shape. Returns it as float64."""
    grad_y = np.asarray(grad_y)
    if grad_y.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a real array (the gradient of a real loss); got dtype {grad_y.dtype}")
    if grad_y.shape != tuple(shape):
        raise ValueError(f"{name} must have the output's shape {tuple(shape)}; got {grad_y.shape}")
    return grad_y.astype(np.float64)


def sum_to_shape(grad, shape):
    """Sum `grad` over the axes along which an array of `shape` was broadcast to it."""
    grad = np.asarray(grad)
    grad = grad.sum(axis=tuple(range(grad.ndim - len(shape))))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return (grad.sum(axis=stretched, keepdims=True) if stretched else grad).reshape(shape)


def complex_pair(name, grad):
    """{name_re: Re G, name_im: Im G} for a complex array assembled as name_re + i·name_im."""
    return {f"{name}_re": np.ascontiguousarray(grad.real), f"{name}_im": np.ascontiguousarray(grad.imag)}


# ----------------------------------------------------------------------------- diagonal systems
def diagonal_states(Lambda, dt, method, tau, drive, h0=None):
    """The forward of a diagonal layer's recurrence: h_t = Ā_t ⊙ h_{t−1} + γ̄_t ⊙ v_t.

    Lambda: (S...) complex; dt: broadcastable to it; tau: (b, L) or None; drive v: (b, L, S...);
    h0: (b, S...) or None. Returns the states (b, L, S...) complex128.
    """
    Lambda_bar, gamma_bar = discretize(Lambda, dt, method, tau)                          # (S...) or (b, L, S...)
    return scan(Lambda_bar, gamma_bar * drive, h0)                                       # (b, L, S...)


def diagonal_states_vjp(Lambda, dt, method, tau, drive, h0, states, grad_states):
    """The adjoint of `diagonal_states`: reverse scan, then through γ̄ ⊙ v and the discretisation.

    Same arguments as `diagonal_states` plus its result `states` and G_h (b, L, S...) complex.
    Returns (G_λ (S...) complex, G_Δ with dt's shape, G_v (b, L, S...) complex, G_h0 (b, S...) or None).
    """
    Lambda_bar, gamma_bar = discretize(Lambda, dt, method, tau)                          # (S...) or (b, L, S...)
    grad_a, grad_b, grad_h0 = scan_vjp(Lambda_bar, gamma_bar * drive, h0, states, grad_states)
    grad_gamma_bar = sum_to_shape(grad_b * np.conj(drive), np.shape(gamma_bar))         # like γ̄
    grad_drive = grad_b * np.conj(gamma_bar)                                             # (b, L, S...)
    grad_Lambda, grad_dt = discretize_vjp(Lambda, dt, method, tau, grad_a, grad_gamma_bar)
    return grad_Lambda, grad_dt, grad_drive, grad_h0


def depthwise_scan_vjp(Lambda_bar, gamma_bar, B, C, kappa, u, grad_y, h0=None):
    """The adjoint of a depthwise diagonal recurrence and its read-out (S4D, SPEC §4.5), by definition:

        v_t = B ⊙ u_t,   h_t = Ā_t ⊙ h_{t−1} + γ̄_t ⊙ v_t,   y_t = κ·Re Σ_n C h_t   (per channel; D u: the caller's)

    Lambda_bar, gamma_bar: discretize's (Ā, γ̄), (H, N) or (b, L, H, N) complex; B, C: (H, N) complex; kappa: κ;
    u, grad_y: (b, L, H) real; h0: (b, H, N) or None. Returns (G_Ā like Lambda_bar, G_γ̄ like gamma_bar,
    G_B (H, N), G_C (H, N) complex, G_u (b, L, H) real (the recurrence's path), G_h0 (b, H, N) or None).
    Keeps every state and its adjoint; `reference.kernels.adjoint.depthwise_scan_vjp_fused` is its fast path.
    """
    drive = contract("hn,blh->blhn", B, u)                                               # (b, L, H, N)
    states = scan(Lambda_bar, gamma_bar * drive, h0)                                     # (b, L, H, N)
    grad_C = kappa * contract("blh,blhn->hn", grad_y, np.conj(states))                   # (H, N)
    grad_states = kappa * contract("hn,blh->blhn", np.conj(C), grad_y)                   # (b, L, H, N)
    grad_a, grad_b, grad_h0 = scan_vjp(Lambda_bar, gamma_bar * drive, h0, states, grad_states)
    grad_gamma_bar = sum_to_shape(grad_b * np.conj(drive), np.shape(gamma_bar))         # like γ̄
    grad_drive = grad_b * np.conj(gamma_bar)                                             # (b, L, H, N)
    grad_B = contract("blhn,blh->hn", grad_drive, u)                                     # (H, N)
    grad_u = contract("blhn,hn->blh", grad_drive, np.conj(B)).real                       # (b, L, H)
    return grad_a, grad_gamma_bar, grad_B, grad_C, grad_u, grad_h0


# ----------------------------------------------------------------------------- dense systems (LSSL)
def dense_scan_vjp(A, b, h0, h, grad_h):
    """The adjoint of `scan_dense` (real): λ_t = G_t + A_{t+1}ᵀ λ_{t+1}; G_{A_t} = λ_t h_{t−1}ᵀ,
    G_{b_t} = λ_t, G_{h0} = A_0ᵀ λ_0.

    A: (S..., N, N) or (b, L, S..., N, N); b, h, grad_h: (b, L, S..., N); h0: (b, S..., N) or None.
    Returns (G_A with A's shape, G_b (b, L, S..., N), G_h0 or None).
    """
    A_full = np.broadcast_to(A, np.shape(h) + np.shape(h)[-1:])                          # (b, L, S..., N, N)
    lam = np.empty_like(grad_h)                                                          # (b, L, S..., N)
    carry = np.zeros_like(grad_h[:, 0])                                                  # λ_{t+1} (b, S..., N)
    for t in range(grad_h.shape[1] - 1, -1, -1):
        if t < grad_h.shape[1] - 1:
            carry = np.einsum("...mn,...m->...n", A_full[:, t + 1], carry)               # A_{t+1}ᵀ λ_{t+1}
        carry = grad_h[:, t] + carry
        lam[:, t] = carry
    first = np.zeros_like(h[:, :1]) if h0 is None else np.asarray(h0)[:, None]           # (b, 1, S..., N)
    h_prev = np.concatenate([first, h[:, :-1]], axis=1)                                  # (b, L, S..., N)
    grad_A = lam[..., :, None] * h_prev[..., None, :]                                     # (b, L, S..., N, N)
    grad_A = grad_A if np.ndim(A) == grad_A.ndim else grad_A.sum(axis=(0, 1))
    grad_h0 = None if h0 is None else np.einsum("...mn,...m->...n", A_full[:, 0], lam[:, 0])
    return grad_A, lam, grad_h0


# ----------------------------------------------------------------------------- causal convolutions
def causal_dilated_conv_vjp(u, g, dilation, grad_y):
    """The adjoint of (g ⋆_d u)_t = Σ_j g[:, j]·u_{t−j·d} (u_{<0} = 0).

    u: (b, L, H); g: (H, k) lag order; grad_y: (b, L, H). Returns (G_u (b, L, H), G_g (H, k)).
    """
    L = u.shape[1]
    grad_u, grad_g = np.zeros_like(grad_y), np.zeros(g.shape)                            # (b, L, H), (H, k)
    for j in range(min(g.shape[1], (L - 1) // dilation + 1)):                            # taps with lag < L
        shift = j * dilation
        grad_u[:, :L - shift] += g[:, j] * grad_y[:, shift:]
        grad_g[:, j] = np.einsum("blh,blh->h", grad_y[:, shift:], u[:, :L - shift])
    return grad_u, grad_g


# ----------------------------------------------------------------------------- the vjp preamble
BIDIRECTIONAL_VJPS = ("LRU", "S5", "S4D", "Centaurus", "LSSL", "RGLRU", "S6", "S7", "GLA", "GatedDeltaNet",
                      "DeltaProduct")   # vjp includes the backward direction (§4.12)


def prepare_vjp(layer, grad_y, x, lengths, integration_timesteps, initial_state):
    """The one preamble of every layer's `vjp`: the forward's checks (`prepare_call`), then G_y checked
    against x's shape and zeroed at padded positions. Returns (G_y, x, lengths, τ, h0).
    A bidirectional layer whose vjp does not yet include the backward direction is refused, never half-done."""
    if getattr(layer, "bidirectional", False) and type(layer).__name__ not in BIDIRECTIONAL_VJPS:
        raise ValueError(f"vjp is not available for {type(layer).__name__} with bidirectional=True: the adjoint of "
                         f"its backward direction is not written yet (written for {', '.join(BIDIRECTIONAL_VJPS)})")
    from .layers._checks import prepare_call  # here, not at the top: the layers import this module
    x, lengths, tau, h0 = prepare_call(layer, x, lengths, integration_timesteps, initial_state, "sequential")
    grad_y = mask_padding(check_grad(grad_y, x.shape), lengths)                          # (b, L, H)
    return grad_y, x, lengths, tau, h0


def parameter_gradients(layer, grads):
    """The gradients in `layer.params` order, one per trainable parameter (those not in `layer.frozen`),
    each real with its parameter's shape."""
    frozen = getattr(layer, "frozen", ())
    ordered = {}
    for name, value in layer.params.items():
        if name in frozen:
            continue
        grad = np.asarray(grads[name])
        if np.iscomplexobj(grad) or grad.shape != value.shape:
            raise ValueError(f"internal: gradient of {name!r} is {grad.dtype} {grad.shape}; expected real {value.shape}")
        ordered[name] = grad
    return ordered


# ----------------------------------------------------------------------------- the classifier (SPEC §6, §11)
def loss_and_output_gradient(output, labels, num_classes):
    """Cross-entropy (mean over the batch) for logits (b, C) and integer labels (b,) when num_classes > 0,
    else the mean squared error over every entry of values (b, D) and targets (b, D) (or (b,) when D = 1).
    Returns (loss float, ∂loss/∂output with output's shape)."""
    batch = output.shape[0]
    labels = np.asarray(labels)
    if num_classes > 0:
        if labels.dtype.kind not in "iu" or labels.shape != (batch,):
            raise ValueError(f"labels must be integer class indices of shape (b={batch},); got {labels.dtype} "
                             f"{labels.shape}")
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(f"labels must be in [0, num_classes={num_classes}); got {labels.min()}..{labels.max()}")
        shifted = output - output.max(axis=1, keepdims=True)                             # (b, C)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))         # (b, C)
        rows = np.arange(batch)
        grad = np.exp(log_probs)                                                         # softmax (b, C)
        grad[rows, labels] -= 1.0
        return float(-log_probs[rows, labels].mean()), grad / batch
    if labels.dtype.kind not in "fiu" or labels.size != output.size or labels.shape[0] != batch:
        raise ValueError(f"targets must be real with the output's shape {output.shape}; got {labels.shape}")
    error = output - labels.reshape(output.shape).astype(np.float64)                     # (b, D)
    return float(np.mean(error ** 2)), 2.0 * error / error.size


def classifier_loss_and_grad(model, x, labels, lengths=None, integration_timesteps=None):
    """The forward of `Classifier.stages` keeping what the backward needs, the loss, and the backward pass
    block by block: head → final pooling → for each block, from the last: pooling → LayerNorm → residual →
    dropout (the mask the forward drew) → activation → mixer.vjp → the input embedding or projection.
    Returns (loss, {param: gradient}) in `model.params` order, frozen mixer params left out."""
    from . import nn
    from .pooling import final_pool, final_pool_vjp, pool, pool_vjp

    from .layers._checks import check_integration_timesteps, check_lengths

    cfg, P = model.config, model.params
    h = model.embed(x)                                                                  # (b, L, H), validated
    batch, L, _ = h.shape
    lengths = check_lengths(lengths, batch, L)
    tau = check_integration_timesteps(integration_timesteps, batch, L)
    for i, mixer in enumerate(model.mixers):
        if not hasattr(mixer, "vjp"):
            raise TypeError(f"loss_and_grad needs every mixer's hand-written backward pass: layer {i} "
                            f"({type(mixer).__name__}) has no vjp method yet")
        if tau is not None and not getattr(mixer, "accepts_timesteps", True):
            raise ValueError(f"integration_timesteps were given but layer {i} ({type(mixer).__name__}) "
                             "does not accept them")
    activation, activation_vjp = nn.ACTIVATIONS[cfg["activation"]], nn.ACTIVATION_VJPS[cfg["activation"]]
    p = cfg["dropout"]
    model.sync_mixers()
    tape = []
    for i, mixer in enumerate(model.mixers):
        mixed = mixer(h, lengths) if tau is None else mixer(h, lengths, tau)             # (b, L_i, H)
        activated = activation(mixed)
        keep = nn.dropout_mask(activated.shape, p, model.dropout_rng) if model.training else None
        dropped = activated if keep is None else nn.dropout_with_mask(activated, keep, p)
        summed = dropped + h                                                             # (b, L_i, H)
        normed = nn.layer_norm(summed, P[f"blocks.{i}.norm.weight"], P[f"blocks.{i}.norm.bias"])
        tape.append((h, lengths, tau, mixed, keep, summed, normed))
        h, lengths, tau = pool(normed, lengths, tau, mode=model.modes[i], stride=model.strides[i])
    pooled = final_pool(h, lengths, mode=cfg["pooling"])                                 # (b, H)
    output = nn.linear(pooled, P["head.weight"], P["head.bias"])                         # (b, C or D)
    loss, grad_output = loss_and_output_gradient(output, labels, cfg["num_classes"])

    grads = {}
    grad_pooled, grads["head.weight"], grads["head.bias"] = nn.linear_vjp(grad_output, pooled, P["head.weight"],
                                                                         P["head.bias"])
    grad_h = final_pool_vjp(grad_pooled, h, lengths, mode=cfg["pooling"])                # (b, L_n, H)
    for i in range(len(model.mixers) - 1, -1, -1):
        h_in, lengths, tau, mixed, keep, summed, normed = tape[i]
        grad_normed = pool_vjp(grad_h, normed, lengths, tau, mode=model.modes[i], stride=model.strides[i])
        grad_summed, grads[f"blocks.{i}.norm.weight"], grads[f"blocks.{i}.norm.bias"] = nn.layer_norm_vjp(
            grad_normed, summed, P[f"blocks.{i}.norm.weight"])
        grad_activated = grad_summed if keep is None else nn.dropout_vjp(grad_summed, keep, p)
        grad_mixed = activation_vjp(grad_activated, mixed)                               # (b, L_i, H)
        grad_in, mixer_grads, _ = model.mixers[i].vjp(grad_mixed, h_in, lengths, tau)
        grads.update({f"blocks.{i}.mixer.{key}": value for key, value in mixer_grads.items()})
        grad_h = grad_in + grad_summed                                                   # mixer path + residual
    if cfg["vocab_size"] is None:
        features = np.asarray(x, dtype=np.float64)                                       # (b, L, input_dim)
        _, grads["input_proj.weight"], grads["input_proj.bias"] = nn.linear_vjp(
            grad_h, features, P["input_proj.weight"], P["input_proj.bias"])
    else:
        ids = np.asarray(x)                                                              # (b, L)
        if "embedding_proj.weight" in P:
            width_E = P["embedding.weight"][ids]                                         # (b, L, E)
            if "position_embedding.weight" in P:
                width_E = width_E + P["position_embedding.weight"][:L]
            grad_h, grads["embedding_proj.weight"], grads["embedding_proj.bias"] = nn.linear_vjp(
                grad_h, width_E, P["embedding_proj.weight"], P["embedding_proj.bias"])
        grads["embedding.weight"] = nn.embedding_vjp(grad_h, ids, P["embedding.weight"].shape[0], cfg["padding_idx"])
        if "position_embedding.weight" in P:
            grads["position_embedding.weight"] = nn.position_embedding_vjp(grad_h, P["position_embedding.weight"].shape[0])
    return loss, {name: grads[name] for name in P if name in grads}


# ----------------------------------------------------------------------------- bidirectional layers (SPEC §4.12)
def along_time(dt, drive, lengths):
    """dt reversed within lengths when it is selective (a step per position: its shape starts with the drive's
    (b, L), as S7's Δ_t), else unchanged (a step shared by every position). Its own inverse."""
    from .layers._bidirectional import reverse_within
    return reverse_within(dt, lengths) if np.ndim(dt) == np.ndim(drive) else dt


def backward_direction_states(Lambda, dt, method, tau, drive, lengths):
    """The backward direction's states h^b (b, L, S...): `diagonal_states` on each row's reversed valid prefix
    with the reversed gaps, reversed back (the drive v_t = W u_t and a selective Δ_t are positionwise, so they
    are reversed instead of u)."""
    from .layers._bidirectional import reverse_within, reversed_gaps
    states = diagonal_states(Lambda, along_time(dt, drive, lengths), method, reversed_gaps(tau, lengths),
                             reverse_within(drive, lengths))
    return reverse_within(states, lengths)                                               # (b, L, S...)


def backward_direction_vjp(Lambda, dt, method, tau, drive, lengths, states_back, grad_states_back):
    """The adjoint of `backward_direction_states`: a reversal within lengths is its own inverse (a permutation
    of each row's valid prefix), so the reverse scan of the reversed sequence runs forward in time.
    Returns (G_λ, G_Δ with dt's shape (a selective Δ_t's in forward time), G_v (b, L, S...)) to add to the
    forward direction's."""
    from .layers._bidirectional import reverse_within, reversed_gaps
    tau_r, drive_r = reversed_gaps(tau, lengths), reverse_within(drive, lengths)
    grad_Lambda, grad_dt_r, grad_drive_r, _ = diagonal_states_vjp(
        Lambda, along_time(dt, drive, lengths), method, tau_r, drive_r, None, reverse_within(states_back, lengths),
        reverse_within(grad_states_back, lengths))
    return grad_Lambda, along_time(grad_dt_r, drive, lengths), reverse_within(grad_drive_r, lengths)
