"""LSSL — the dense, continuous-time Linear State-Space Layer with a HiPPO-LegS matrix (SPEC §4.4), PyTorch mirror.

Mirrors reference/layers/lssl.py name by name (STYLE 6); the equations and the initialisation are the
reference's (imported, never re-derived). Each feature h is its own single-input system with N real
states, all sharing A and B:

    x_{t,h} = Ā_h x_{t−1,h} + B̄_h u_{t,h}               (Ā_h, B̄_h = discretize_dense(A, B, Δ_h), dense N×N)
    z_{t,h,m} = C_{h,m}·x_{t,h} + D_{h,m} u_{t,h}       (M = channels outputs per feature)
    y_t = W_out · gelu(z_t flattened over (h, m)) + b_out

Paper, upstream and what it leaves out: as in reference/layers/lssl.py. A and B are the reference's
`frozen` params: here they are persistent buffers (so `state_dict()` keys still equal the reference
params keys), and A becomes an nn.Parameter with learn_A=True. Methods: "sequential" (`scan_dense`,
the default, as in the reference) and "fft" (kernel view). Differences from the reference, each for a reason:
* precision follows the parameters (float32 by default, float64 after .double());
* value checks can be switched off with check_finite=False and are skipped while torch.compile traces.

Glossary (SPEC §1): b batch, l lag/time, h feature (H = d_model), n state (N = d_state),
m output channel (M = channels), o output feature.
"""
import torch

from reference.layers.lssl import LSSL as ReferenceLSSL, event_chunk
from ..discretize import discretize_dense
from ..discretize_event import matrix_exp_into
from ..nn import gelu
from ..scan import scan_dense
from ._base import Layer, check_step, draw_seed
from ._bidirectional import backward_states, check_call, refuse_streaming, two_sided_kernel
from ._checks import check_inplace, check_positive_int, prepare_call
from ._math import fft_causal_conv, final_state

__all__ = ["discretize_per_step", "LSSL"]


def discretize_per_step(A, B, dt, method):
    """Dense (Ā, B̄) for every step size in the tensor `dt` (any shape S); a zero step gives (I, 0).
    Returns (S..., N, N) and (S..., N)."""
    # Note: a zero step is discretised at the safe Δ = 1 and then replaced, so that its gradient is not NaN.
    positive = dt > 0                                                             # (S...)
    safe_dt = torch.where(positive, dt, torch.ones_like(dt))                      # (S...)
    A_bar, B_bar = discretize_dense(A, B, safe_dt, method, check_values=False)    # (S..., N, N), (S..., N)
    identity = torch.eye(A.shape[0], dtype=A_bar.dtype, device=A_bar.device)     # (N, N)
    A_bar = torch.where(positive[..., None, None], A_bar, identity)
    B_bar = torch.where(positive[..., None], B_bar, torch.zeros_like(B_bar))
    return A_bar, B_bar


class LSSL(Layer):
    """LSSL layer: real (b, L, H) -> (b, L, H) in the module's dtype; real state of shape (b, H, N)."""

    reference_class = ReferenceLSSL
    methods = ("sequential", "fft")
    methods_reason = ReferenceLSSL.methods_reason

    def __init__(self, d_model, d_state, channels=1, dt_min=1e-3, dt_max=0.1, discretization="bilinear",
                 learn_A=False, bidirectional=False, seed=None):
        super().__init__()
        ref = ReferenceLSSL(d_model, d_state, channels, dt_min, dt_max, discretization, learn_A, bidirectional,
                            seed=draw_seed(seed))
        self._init_from_reference(ref, buffers=ref.frozen)     # frozen params become persistent buffers
        self.d_model, self.d_state, self.channels = ref.d_model, ref.d_state, ref.channels
        self.discretization, self.learn_A, self.frozen = ref.discretization, ref.learn_A, ref.frozen
        self.state_shape, self.bidirectional = ref.state_shape, ref.bidirectional

    # --------------------------------------------------------------------- the discrete system
    def discrete_system(self, tau=None):
        """(Ā, B̄): (H, N, N), (H, N) without τ; (b, L, H, N, N), (b, L, H, N) with τ (b, L): step τ_t·Δ_h."""
        dt = torch.exp(self.log_dt)                                            # (H,)
        dt = dt if tau is None else tau[:, :, None] * dt                       # (H,) or (b, L, H)
        return discretize_per_step(self.A, self.B, dt, self.discretization)

    def read_out(self, states, x, states_back=None):
        """y = W_out · gelu(z flattened over (h, m)) + b_out with z = C x_t + D u_t:
        states (b, L, H, N), x (b, L, H) -> y (b, L, H) (or one step: (b, H, N), (b, H)).
        Bidirectional: z = C h^f_t + C_back h^b_t + D u_t, states_back (b, L, H, N) (SPEC §4.12)."""
        z = torch.einsum("hmn,...hn->...hm", self.C, states) + self.D * x[..., None]    # (…, H, M)
        if states_back is not None:
            z = z + torch.einsum("hmn,...hn->...hm", self.C_back, states_back)           # (…, H, M)
        W_out = self.W_out.reshape(self.d_model, self.d_model, self.channels)            # (H, H, M)
        return torch.einsum("ohm,...hm->...o", W_out, gelu(z)) + self.b_out

    # --------------------------------------------------------------------- the views
    def forward(self, x, lengths=None, integration_timesteps=None, *, initial_state=None, return_state=False,
                method="sequential", check_finite=True):
        """y (b, L, H), or (y, final state (b, H, N) real) with return_state=True.

        Gu et al. 2021 (LSSL), eqs. (1)–(3): the continuous system x' = Ax + Bu, y = Cx + Du, its
        discretisation and the discrete recurrence, here with a GBT/ZOH step per feature (SPEC §4.4) and
        the read-out y = W_out·gelu(C x + D u) + b_out; "fft" convolves with the state's impulse
        response Ā^l B̄ (the Krylov view of the paper's §3).
        x: real (b, L, H); lengths: (b,) ints (the state returned is the one after step len−1; valid
        outputs do not depend on the padding); integration_timesteps τ: (b, L) >= 0 (event gaps);
        initial_state: (b, H, N); method: "sequential" (the dense scan) or "fft" (no τ, no initial_state).
        """
        x, lengths, tau, h0 = prepare_call(self, x, lengths, integration_timesteps, initial_state, method, check_finite)
        check_call(self, initial_state, return_state)

        def run(x, tau, h0=None):                                                          # states (b, L, H, N)
            if method == "fft":
                return fft_causal_conv(self.state_kernel(x.shape[1]), x, "lhn,blh->blhn")  # (b, L, H, N)
            # Note: with autograd on, every chunk's transitions are kept for the backward pass, so the limit
            # applies to all of them (keep_all); the reference and no_grad calls hold one chunk at a time.
            itemsize, keep_all = x.element_size(), torch.is_grad_enabled()
            L, chunk = x.shape[1], x.shape[1] if tau is None else event_chunk(*x.shape, self.d_state, itemsize, keep_all)
            parts, h = [], h0                                                              # memory: see event_chunk
            for start in range(0, L, chunk):
                A_bar, B_bar = self.discrete_system(None if tau is None else tau[:, start:start + chunk])  # (…, H, N, N)
                parts.append(scan_dense(A_bar, B_bar * x[:, start:start + chunk, :, None], h))  # (b, chunk, H, N)
                h = parts[-1][:, -1]                                                       # (b, H, N)
            return torch.cat(parts, dim=1)                                                 # (b, L, H, N)
        states = run(x, tau, h0)                                                           # (b, L, H, N)
        states_back = backward_states(run, x, lengths, tau) if self.bidirectional else None   # SPEC §4.12
        y = self.read_out(states, x, states_back)                                          # (b, L, H)
        return (y, final_state(states, lengths)) if return_state else y

    def step(self, x_t, state, integration_timestep=None, *, inplace=False):
        """One update: x_t real (b, H), state real (b, H, N), τ (b,) or None -> (y_t (b, H), state (b, H, N)).
        inplace=True: the new state is written into `state` itself, which is returned (autograd off)."""
        refuse_streaming(self, "step")
        given = state
        x, tau, state = check_step(self, x_t, state, integration_timestep, self.state_shape, self.dtype)  # (b, 1, H)
        if inplace:
            check_inplace(given, state)
            return self._step_inplace(x, state, tau)
        # Note: without τ the dense (Ā, B̄) are formed once while autograd is off (Layer._cached), and B̄ u is
        # added into the buffer of Ā x, the state returned (the read-out's einsum copies the state once more).
        A_bar, B_bar = self._cached("discrete_system", self.discrete_system) if tau is None else \
            self.discrete_system(tau)                                                      # (…, H, N, N), (…, H, N)
        Ax = torch.einsum("...nk,...k->...n", A_bar, state[:, None])                       # (b, 1, H, N)
        new_state = Ax.addcmul_(B_bar, x[..., None])                                       # (b, 1, H, N): Ā x + B̄ u
        return self.read_out(new_state, x)[:, 0], new_state[:, 0]

    def _step_inplace(self, x, state, tau):
        """`step(..., inplace=True)`: x (b, 1, H), the checked state (b, H, N), written over and returned.
        Note: torch only. Without τ, Ā x is formed by one batched product over h into a workspace
        (Layer._workspace) and copied over the state, so nothing state-sized is allocated per event. With τ
        every row and channel has its own dense step d = τΔ_h. bilinear: the new state is one solve,
        (I − dA/2) x' = (I + dA/2) x + d B u, with the matrix, its LU factors and the right side in workspaces
        (Ā_t is never formed), so nothing state-sized is allocated either; zoh: Ā_t = expm(dA) (b, H, N, N) is
        formed in workspaces by `matrix_exp_into` (Padé scaling and squaring: matrix_exp has no out=) and
        B̄ u = A⁻¹(Ā_t − I)B u by a solve on the cached LU factors of Aᵀ.
        The reference forms the new state, then copies it into the given array."""
        b, H, N = state.shape
        if tau is None:
            A_bar, B_bar = self._cached("discrete_system", self.discrete_system)             # (H, N, N), (H, N)
            Ax = torch.bmm(A_bar, state.permute(1, 2, 0),
                           out=self._workspace("Ax", (H, N, b), self.dtype))                # (H, N, b)
            state.copy_(Ax.permute(2, 0, 1))                                                # (b, H, N) Ā x
        elif self.discretization == "bilinear":
            d = torch.mul(tau, torch.exp(self.log_dt), out=self._workspace("dt_A", (b, H), self.dtype))  # (b, H)
            rhs = torch.mm(state.reshape(b * H, N), self.A.t(),
                           out=self._workspace("rhs", (b * H, N), self.dtype)).view(b, H, N)  # (b, H, N) A x
            rhs.mul_(d[..., None]).mul_(0.5).add_(state)                                    # (I + dA/2) x
            rhs.addcmul_(self.B, (d * x[:, 0])[..., None])                                  # + d B u
            left = torch.mul(self.A, d[..., None, None], out=self._workspace("left", (b, H, N, N), self.dtype))
            left.mul_(-0.5).diagonal(dim1=-2, dim2=-1).add_(1.0)                            # (b, H, N, N) I − dA/2
            # LAPACK factorises column-major matrices: the LU workspace is one, seen transposed (.mT).
            factors = (self._workspace("lu", (b, H, N, N), self.dtype).mT,
                       self._workspace("pivots", (b, H, N), torch.int32), self._workspace("info", (b, H), torch.int32))
            LU, pivots, _ = torch.linalg.lu_factor_ex(left, out=factors)                    # (b, H, N, N), (b, H, N)
            torch.linalg.lu_solve(LU, pivots, rhs[..., None], out=state[..., None])       # (b, H, N, 1) x'
            return self.read_out(state, x[:, 0]), state
        else:
            # zoh: x' = Ā_t x + A⁻¹(Ā_t − I) B u, with Ā_t = expm(dA) in workspaces (matrix_exp_into) and the
            # solve by A as rows, z Aᵀ = w, on the cached LU factors of Aᵀ.
            d = torch.mul(tau, torch.exp(self.log_dt), out=self._workspace("dt_A", (b, H), self.dtype))  # (b, H)
            A_bar = matrix_exp_into(self.A, d, self._workspace, self._workspace("A_bar", (b, H, N, N), self.dtype),
                                    self._cached("A_norm", lambda: float(torch.linalg.matrix_norm(self.A, ord=1))))
            Bu = torch.mul(self.B, x[:, 0, :, None], out=self._workspace("Bu", (b, H, N), self.dtype))   # (b, H, N)
            w = torch.matmul(A_bar, Bu[..., None], out=self._workspace("w", (b, H, N, 1), self.dtype))[..., 0]
            LU, pivots = self._cached("A_transposed_lu", lambda: torch.linalg.lu_factor(self.A.mT))  # (N, N), (N,)
            z = torch.linalg.lu_solve(LU, pivots, w.sub_(Bu).view(b * H, N), left=False,
                                      out=self._workspace("z", (b * H, N), self.dtype))      # (b·H, N) B̄ u
            Ax = torch.matmul(A_bar, state[..., None], out=self._workspace("Ax", (b, H, N, 1), self.dtype))
            state.copy_(Ax[..., 0]).add_(z.view(b, H, N))                                   # (b, H, N) Ā x + B̄ u
            return self.read_out(state, x[:, 0]), state
        state.addcmul_(B_bar, x[:, 0, :, None])                                             # (b, H, N): Ā x + B̄ u
        return self.read_out(state, x[:, 0]), state

    def state_kernel(self, L):
        """Impulse response of the state, Ā_h^l B̄_h: (L, H, N), from the same dense scan."""
        A_bar, B_bar = self.discrete_system()                                              # (H, N, N), (H, N)
        impulse = B_bar.new_zeros((1, L, self.d_model, self.d_state))                      # (1, L, H, N)
        impulse[0, 0] = B_bar
        return scan_dense(A_bar, impulse)[0]                                               # (L, H, N)

    def kernel(self, L):
        """Kernel of the pre-activation z: K_l = C·Ā^l B̄ + D·[l = 0], (L, H, M); z = causal_conv(K, u)."""
        L = check_positive_int(L, "L")
        state_kernel = self.state_kernel(L)                                                # (L, H, N)
        K = torch.einsum("hmn,lhn->lhm", self.C, state_kernel)                             # (L, H, M)
        K[0] += self.D
        if self.bidirectional:                                                             # (2L − 1, H, M), SPEC §4.12
            K = two_sided_kernel(K, torch.einsum("hmn,lhn->lhm", self.C_back, state_kernel))
        return K

    def init_state(self, batch):
        """Zero state (batch, H, N) in the module's dtype, on its device."""
        return torch.zeros((check_positive_int(batch, "batch"),) + self.state_shape, dtype=self.dtype,
                           device=self.device)
