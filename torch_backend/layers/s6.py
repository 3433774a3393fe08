"""S6 — Mamba's selective state space model (Gu & Dao 2023), SPEC §4.8, PyTorch mirror of
reference/layers/s6.py (STYLE 6).

    [δ̃_t | B_t | C_t] = v_t·x_projᵀ,   Δ_t = softplus(δ̃_t·dt_projᵀ + dt_proj.bias),   A = −exp(A_log)
    (Ā_t, γ̄_t) = discretize(A, Δ_t, method, τ_t)                                         (SPEC §2)
    h_t[e, n] = Ā_t[e, n]·h_{t−1}[e, n] + γ̄_t[e, n]·B_t[n]·v_t[e],   y_t[e] = Σ_n C_t[n]·h_t[e, n] + D[e]·v_t[e]

Bare layer by default (v = x, E = H); `block=True` is the Mamba mixer (in_proj → causal depthwise conv1d →
SiLU → S6 → ⊙ SiLU(z) → out_proj) with mamba_ssm's parameter names, so its state dicts load. State: bare h
(b, E, N); block the pair (conv state (b, d_conv − 1, E), h (b, E, N)). Initialisation and argument checks:
the reference's (same seed, same values, same errors). softplus is logaddexp(0, z), as in the reference
(torch's F.softplus switches to the identity above 20).
Bidirectional (SPEC §4.12), as the reference: only the SSM runs both ways; A_log, Δ_t, B_t (x_proj, dt_proj) and,
for the block, in_proj, the causal conv and the gate z are shared; the backward direction is the forward SSM on
each row's reversed valid prefix of v with the reversed gaps, read out by C^b_t = v_t·x_proj_backᵀ (N, E) with
D := 0, and its output reversed back: y_t = Σ_n C_t h^f_t + Σ_n C^b_t h^b_t + D v_t, then mix_out.

Differences from the reference, each for a reason:
* precision follows the parameters (float32 by default, float64 after .double());
* `method` defaults to "auto": on CPU the fused Numba kernel `reference.kernels.selective` as the custom op
  `lrnn_spec::selective_scan` (torch_backend/selective.py: no (b, L, E, N) array, recomputing backward; also
  `method="fused"`), elsewhere `selective_scan_blocked` (also `method="blocked"`): time blocks of 256 steps,
  each forming its (b, T, E, N) arrays for the chunked scan of torch_backend/scan.py, recomputed in backward
  (torch.utils.checkpoint), so memory follows b·L·E, not b·L·E·N; any scan method names the whole-sequence
  definition instead; the reference's default is "sequential", the definition; bidirectional runs its backward
  direction through the same path (on the reversed v, Δ_t, B_t, C^b_t), so it never builds h^b either;
* value checks follow `check_finite` and are skipped while torch.compile traces.

Upstream: state-spaces/mamba (`Mamba`, `selective_scan_ref`), johnma2006/mamba-minimal (`MambaBlock`).
Leaves out: the residual block and norm around the mixer, the CUDA kernels, Mamba-2.
Glossary (SPEC §1): b batch, L length, H d_model, N d_state; E channels of the SSM, r dt_rank, K d_conv.
"""
from functools import partial

import torch
import torch.nn.functional as F

from reference.layers.s6 import S6 as ReferenceS6
from ..discretize import all_finite, discretize
from ..discretize_event import discretize_event
from ..scan import SCAN_METHODS, scan
from ..selective import selective_scan, selective_scan_blocked
from ._base import Layer, _valid_gaps, check_step, draw_seed
from ._bidirectional import backward_states, check_call, refuse_streaming
from ._checks import check_inplace, check_positive_int, check_state, check_step_input, prepare_call
from ._math import softplus, softplus_


def silu(z):
    """z·σ(z)."""
    return z * torch.sigmoid(z)


# ----------------------------------------------------------------------------- the layer
class S6(Layer):
    """Selective SSM (bare) or Mamba mixer (block=True): x (b, L, H) real → y (b, L, H) in the module's dtype."""

    reference_class = ReferenceS6
    methods = SCAN_METHODS + ("fused", "blocked")
    no_fft_reason = ReferenceS6.no_fft_reason

    def __init__(self, d_model, d_state=16, dt_rank="auto", dt_min=1e-3, dt_max=0.1, dt_init="random",
                 dt_scale=1.0, dt_init_floor=1e-4, discretization="exp_euler", block=False, expand=None,
                 d_conv=None, conv_bias=None, bias=None, bidirectional=False, seed=None):
        super().__init__()
        # Note: the reference validates the arguments (same errors) and draws the parameters (same seed, same values).
        ref = ReferenceS6(d_model, d_state, dt_rank, dt_min, dt_max, dt_init, dt_scale, dt_init_floor, discretization,
                          block, expand, d_conv, conv_bias, bias, bidirectional, seed=draw_seed(seed))
        self._init_from_reference(ref)
        self.d_model, self.d_state, self.discretization = ref.d_model, ref.d_state, ref.discretization
        self.block, self.d_inner, self.dt_rank, self.d_conv = ref.block, ref.d_inner, ref.dt_rank, ref.d_conv
        self.bidirectional = ref.bidirectional

    # --------------------------------------------------------------------- input → selective system
    def mix_in(self, x, conv_state=None):
        """Block: (v = SiLU(conv1d(p)), z, p with the carried conv state prepended); bare: (x, None, None)."""
        if not self.block:
            return x, None, None
        E, K = self.d_inner, self.d_conv
        # Note: the parameters are submodule attributes here (self.in_proj.weight for params["in_proj.weight"]).
        pz = torch.einsum("blh,fh->blf", x, self.in_proj.weight)                               # (b, L, 2E)
        if hasattr(self.in_proj, "bias"):
            pz = pz + self.in_proj.bias
        p, z = pz[..., :E], pz[..., E:]                                                        # (b, L, E) each
        past = x.new_zeros((x.shape[0], K - 1, E)) if conv_state is None else conv_state      # (b, K − 1, E)
        p_ext = torch.cat([past, p], dim=1)                                                    # (b, K − 1 + L, E)
        windows = torch.stack([p_ext[:, k:k + x.shape[1]] for k in range(K)], dim=2)          # (b, L, K, E)
        c = torch.einsum("blke,ek->ble", windows, self.conv1d.weight[:, 0])                    # (b, L, E)
        if hasattr(self.conv1d, "bias"):
            c = c + self.conv1d.bias
        return silu(c), z, p_ext

    def selection(self, v):
        """(Δ_t (b, L, E), B_t (b, L, N), C_t (b, L, N)) from v (b, L, E): the input-dependent part."""
        r, N = self.dt_rank, self.d_state
        x_dbl = torch.einsum("ble,fe->blf", v, self.x_proj.weight)                             # (b, L, r + 2N)
        dt_low, B, C = x_dbl[..., :r], x_dbl[..., r:r + N], x_dbl[..., r + N:]
        dt = softplus(torch.einsum("blr,er->ble", dt_low, self.dt_proj.weight) + self.dt_proj.bias)   # (b, L, E)
        # Note: floored at the smallest normal float of the module's dtype (the reference: float64's).
        return torch.nan_to_num(torch.clamp(dt, min=torch.finfo(dt.dtype).tiny), nan=1.0), B, C

    def discrete_system(self, dt, tau=None, check_values=True):
        """(Ā_t, γ̄_t), each (b, L, E, N) = discretize(A, Δ_t, method, τ) with Δ_t (b, L, E), τ (b, L) or None."""
        A = -torch.exp(self.A_log)                                                             # (E, N)
        return discretize(A, dt[..., None], self.discretization, tau, check_values=check_values)   # (b, L, E, N)

    def C_back(self, v):
        """The backward read-out C^b_t = v_t·x_proj_backᵀ: v (b, L, E) → (b, L, N) (SPEC §4.12)."""
        return torch.einsum("ble,ne->bln", v, self.x_proj_back.weight)                        # (b, L, N)

    def backward_direction(self, v, tau, lengths, method, fused, check_values=True):
        """Σ_n C^b_t[n] h_t[e, n] (b, L, E): the forward SSM of v (b, L, E) (the reversed prefixes, with the reversed
        gaps τ) from a zero state, read out by C^b_t with no D term (SPEC §4.12); by the fused op when `fused`,
        else by the scan `method`.
        Note: the reference's backward direction is its `recurrence` (states); here the read-out comes with it,
        because the fused op returns Σ_n C_t h_t + D v_t and never the states (D := 0 drops its D term)."""
        dt, B, _ = self.selection(v)
        C_back = self.C_back(v)                                                                # (b, L, N)
        if fused:
            return selective_scan(v, dt, -torch.exp(self.A_log), B, C_back, torch.zeros_like(self.D), tau, None,
                                  lengths, self.discretization)[0]                             # (b, L, E)
        if method == "blocked":
            return selective_scan_blocked(v, dt, B, C_back, torch.zeros_like(self.D),
                                          partial(self.discrete_system, check_values=check_values), tau)[0]
        A_bar, gamma_bar = self.discrete_system(dt, tau, check_values=check_values)           # (b, L, E, N)
        states = scan(A_bar, gamma_bar * B[:, :, None, :] * v[..., None], None, method=method)   # (b, L, E, N)
        return torch.einsum("blen,bln->ble", states, C_back)                                  # (b, L, E)

    def read_out(self, states, v, C, z=None, y_back=None):
        """y_t[e] = Σ_n C_t[n] h_t[e, n] + D[e] v_t[e], then mix_out. states (b, L, E, N).
        Bidirectional: + y_back (b, L, E), the backward direction already read out (SPEC §4.12).
        Note: the reference takes the backward states; here their read-out, the form the fused op returns."""
        y = torch.einsum("blen,bln->ble", states, C) + self.D * v                              # (b, L, E)
        return self.mix_out(y if y_back is None else y + y_back, z)                           # (b, L, H)

    def mix_out(self, y, z=None):
        """Block: out_proj(y ⊙ SiLU(z)) (b, L, H); bare: y itself."""
        if not self.block:
            return y
        out = torch.einsum("ble,he->blh", y * silu(z), self.out_proj.weight)                  # (b, L, H)
        return out + self.out_proj.bias if hasattr(self.out_proj, "bias") else out

    @staticmethod
    def last_steps(x, lengths):
        """The index of each row's last valid step (b,): len − 1, or L − 1 without lengths."""
        return torch.full((x.shape[0],), x.shape[1] - 1, device=x.device) if lengths is None else lengths - 1

    # --------------------------------------------------------------------- calls
    def init_state(self, batch):
        """Zero state in the module's dtype: bare h (batch, E, N); block the pair (conv state (batch, K − 1, E), h)."""
        h = torch.zeros((check_positive_int(batch, "batch"), self.d_inner, self.d_state), dtype=self.dtype,
                        device=self.device)
        return (h.new_zeros((batch, self.d_conv - 1, self.d_inner)), h) if self.block else h

    def check_state(self, state, batch, name="initial_state"):
        """(conv state or None, h) from a state shaped like init_state(batch); a pair for block=True.
        Note: finiteness is first read with `all_finite` (one min/max reduction); the full check, which raises the
        reference's message, runs only when that read fails (so a step allocates no state-sized mask)."""
        h_shape = (check_positive_int(batch, "batch"), self.d_inner, self.d_state)
        if not self.block:
            return None, check_state(state, h_shape, self.dtype, name=name, like=self,
                                     check_finite=not all_finite(state))
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise TypeError(f"{name} of S6(block=True) must be a pair (conv state (b, d_conv − 1, E), h (b, E, N)); "
                            f"got {type(state).__name__}")
        return (check_state(state[0], (batch, self.d_conv - 1, self.d_inner), self.dtype,
                            name=f"{name}[0] (conv state)", like=self, check_finite=not all_finite(state[0])),
                check_state(state[1], h_shape, self.dtype, name=f"{name}[1] (h)", like=self,
                            check_finite=not all_finite(state[1])))

    def forward(self, x, lengths=None, integration_timesteps=None, *, initial_state=None,
                return_state=False, method="auto", check_finite=True):
        """y (b, L, H), or (y, final state) with return_state=True (Mamba, Algorithm 2; eqs. (2a)–(2b) with the
        selective Δ, B, C of §3.2 and the discretisation of eq. (4)). Arguments as in the reference.
        Note: method defaults to "auto": the fused Numba op on CPU ("fused" names it), the time-blocked torch path
        elsewhere ("blocked" names it); the reference defaults to "sequential", the definition.
        """
        # Note: initial_state is checked by the layer (a pair for block=True), not by prepare_call.
        x, lengths, tau, _ = prepare_call(self, x, lengths, integration_timesteps, None, method, check_finite)
        check_call(self, initial_state, return_state)
        conv0, h0 = (None, None) if initial_state is None else self.check_state(initial_state, x.shape[0])
        v, z, p_ext = self.mix_in(x, conv0)                                                    # (b, L, E)
        dt, B, C = self.selection(v)
        fused = method == "fused" or (method == "auto" and x.device.type == "cpu")
        method = "blocked" if method == "auto" and not fused else method                      # off the CPU
        y_back = backward_states(lambda u, t: self.backward_direction(u, t, lengths, method, fused, check_finite),
                                 v, lengths, tau) if self.bidirectional else None             # (b, L, E), §4.12
        if fused:
            # Note: a fast path (the fused Numba op; no (b, L, E, N) array), tested equal to the lines below.
            y_ssm, states_at = selective_scan(v, dt, -torch.exp(self.A_log), B, C, self.D, tau, h0, lengths,
                                              self.discretization)                           # (b, L, E), (b, E, N)
            y = self.mix_out(y_ssm if y_back is None else y_ssm + y_back, z)                  # (b, L, H)
            if not return_state:
                return y
        elif method == "blocked":
            # Note: the pure-torch fast path (time blocks, recomputed in backward), tested equal to the lines below.
            y_ssm, states_at = selective_scan_blocked(v, dt, B, C, self.D,
                                                      partial(self.discrete_system, check_values=check_finite), tau,
                                                      h0, self.last_steps(x, lengths) if return_state else None)
            y = self.mix_out(y_ssm if y_back is None else y_ssm + y_back, z)                  # (b, L, H)
            if not return_state:
                return y
        else:
            A_bar, gamma_bar = self.discrete_system(dt, tau, check_values=check_finite)       # (b, L, E, N)
            # ---- the recurrence
            states = scan(A_bar, gamma_bar * B[:, :, None, :] * v[..., None], h0, method=method)  # (b, L, E, N)
            y = self.read_out(states, v, C, z, y_back)                                         # (b, L, H)
            if not return_state:
                return y
            states_at = states[torch.arange(x.shape[0], device=x.device), self.last_steps(x, lengths)]   # (b, E, N)
        if not self.block:
            return y, states_at
        conv = torch.stack([p_ext[i, n + 1:n + self.d_conv]
                            for i, n in enumerate(self.last_steps(x, lengths).tolist())])     # (b, K − 1, E)
        return y, (conv, states_at)

    def step(self, x_t, state, integration_timestep=None, *, inplace=False):
        """One step: x_t (b, H), state as init_state, τ (b,) or None → (y_t (b, H), new state).
        inplace=True (autograd off): the new state is written into the given tensors (h; block: the conv state and
        h) and those same tensors are returned (values as inplace=False, to rounding); the per-event arrays
        (Ā_t, γ̄_t, Δ_t, B_t, C_t, the block's projections) go to workspace buffers."""
        refuse_streaming(self, "step")
        if self.block:
            # Note: as check_step: finiteness of the event and τ from min/max reductions, the full checks if that fails.
            quick = all_finite(x_t) and (integration_timestep is None or _valid_gaps(integration_timestep))
            x, tau = check_step_input(x_t, self.d_model, integration_timestep=integration_timestep, like=self,
                                      check_finite=not quick)                                   # (b, 1, H)
            conv0, h = self.check_state(state, x.shape[0], name="state")
        else:
            # Note: the bare state is checked by check_step (finiteness from one min/max reduction, no zero state).
            x, tau, h = check_step(self, x_t, state, integration_timestep, (self.d_inner, self.d_state),
                                   self.dtype)                                                 # (b, 1, H), (b, E, N)
            conv0 = None
        if inplace:
            check_inplace(state, (conv0, h) if self.block else h)
            return self._step_inplace(x[:, 0], None if tau is None else tau[:, 0], conv0, h), state
        v, z, p_ext = self.mix_in(x, conv0)                                                    # (b, 1, E)
        dt, B, C = self.selection(v)
        # Note: A = −exp(A_log) is formed once while autograd is off (Layer._cached); Ā_t, γ̄_t come from
        # discretize_event (few temporaries), and the new state is written into the buffer of Ā_t.
        A = self._cached("A", lambda: -torch.exp(self.A_log))                                 # (E, N)
        A_bar, gamma_bar = discretize_event(A, dt[:, 0, :, None], self.discretization,
                                            None if tau is None else tau[:, 0])               # (b, E, N), (b, E, 1|N)
        new_h = A_bar.mul_(h).addcmul_(gamma_bar * v[:, 0, :, None], B[:, 0, None, :])       # (b, E, N)
        y_t = self.read_out(new_h[:, None], v, C, z)[:, 0]                                     # (b, H)
        return y_t, ((p_ext[:, 1:], new_h) if self.block else new_h)

    def _step_inplace(self, x, tau, conv, h):
        """The step of `step(..., inplace=True)`: h (b, E, N) and, for the block, conv (b, K − 1, E) ← the new state
        for the event x (b, H) and τ (b,) or None; returns y_t (b, H), the one new tensor.
        Note: torch only: the formulas of mix_in, selection, discrete_system and read_out for one event, with the
        projections, Δ_t, B_t, C_t, Ā_t and γ̄_t in workspace buffers (Layer._workspace; out= products, in-place
        maps, torch's own SiLU; Ā_t, γ̄_t from discretize_event's out= form), the conv window shifted in place and
        h ← Ā_t ⊙ h + (γ̄_t v_t) ⊙ B_t with broadcast in-place products. Equal to step to rounding."""
        (b, _), E, N, r, K = x.shape, self.d_inner, self.d_state, self.dt_rank, self.d_conv
        def scratch(name, *shape):
            return self._workspace(name, shape, x.dtype)                                   # the module's (checked)
        if self.block:
            pz = torch.matmul(x, self.in_proj.weight.T, out=scratch("pz", b, 2 * E))                # (b, 2E)
            if hasattr(self.in_proj, "bias"):
                pz.add_(self.in_proj.bias)
            p, z = pz[:, :E], pz[:, E:]                                                            # (b, E) each
            w = self.conv1d.weight[:, 0]                                                           # (E, K)
            taps = torch.mul(conv, w[:, :-1].T, out=scratch("taps", b, K - 1, E))                  # (b, K − 1, E)
            v = torch.sum(taps, dim=1, out=scratch("v", b, E)).addcmul_(p, w[:, -1])               # (b, E)
            if hasattr(self.conv1d, "bias"):
                v.add_(self.conv1d.bias)
            F.silu(v, inplace=True)                                                                # v = SiLU(c)
            for k in range(K - 2):                                                                 # the window moves
                conv[:, k].copy_(conv[:, k + 1])
            conv[:, K - 2].copy_(p)                                                                # (b, K − 1, E)
        else:
            v = x                                                                                  # (b, E)
        x_dbl = torch.matmul(v, self.x_proj.weight.T, out=scratch("x_dbl", b, r + 2 * N))          # (b, r + 2N)
        dt_low, B, C = x_dbl[:, :r], x_dbl[:, r:r + N], x_dbl[:, r + N:]
        dt = torch.addmm(self.dt_proj.bias, dt_low, self.dt_proj.weight.T, out=scratch("dt", b, E))   # (b, E)
        softplus_(dt, scratch("dt_scratch", b, E)).clamp_(min=torch.finfo(dt.dtype).tiny).nan_to_num_(nan=1.0)
        A = self._cached("A", lambda: -torch.exp(self.A_log))                                     # (E, N)
        out, work = (scratch("A_bar", b, E, N), scratch("gamma_bar", b, E, N)), scratch("discretize", b, E, N)
        A_bar, gamma_bar = discretize_event(A, dt[:, :, None], self.discretization, tau, out=out,
                                            scratch=work)                                          # (b, E, N)
        h.mul_(A_bar).addcmul_(gamma_bar.mul_(v[:, :, None]), B[:, None, :])                       # (b, E, N)
        if not self.block:
            return torch.matmul(h, C[:, :, None])[:, :, 0].addcmul_(self.D, v)                     # (b, E) = (b, H)
        y = torch.matmul(h, C[:, :, None], out=scratch("y", b, E, 1))[:, :, 0].addcmul_(self.D, v)   # (b, E)
        out = torch.matmul(y.mul_(F.silu(z, inplace=True)), self.out_proj.weight.T)                # (b, H)
        return out.add_(self.out_proj.bias) if hasattr(self.out_proj, "bias") else out

