"""Initialisation helpers shared by the layers: HiPPO matrices, their diagonalisation, random inits.

Everything is computed here from its definition (no copied constants), in float64/complex128, from a
`numpy.random.Generator` passed in by the layer (same seed → same parameters in both backends).

HiPPO-LegS (Gu et al. 2020, "HiPPO"; LSSL 2021), for n, k = 0..N−1:
    A_nk = −sqrt(2n+1)·sqrt(2k+1)  (n > k),   −(n+1)  (n = k),   0  (n < k);      B_n = sqrt(2n+1)
Normal-plus-low-rank form (S4, Gu et al. 2022; S5, Smith et al. 2023 §B.1.1), p_n = sqrt(n + ½):
    S = A + p pᵀ has diagonal −½ and S + ½I skew-symmetric, so −i(S + ½I) is Hermitian:
    eigh(−i(S + ½I)) = (ω, V)  ⇒  S = V diag(Λ) Vᴴ with Λ = −½ + iω, V unitary ("HiPPO-N").
Upstream: lindermanlab/S5 `ssm_init.py` (make_HiPPO, make_DPLR_HiPPO, init_VinvB, trunc_standard_normal),
state-spaces/s4 `hippo.py` (nplr). Leaves out: HiPPO measures other than LegS.

Glossary (SPEC §1): N state size, H d_model, b block size (S5), P local state size (S5).
"""
import numpy as np
from scipy.linalg import block_diag

# Standard deviation of a standard normal truncated to [−2, 2]; dividing by it restores unit variance
# (jax.nn.initializers.variance_scaling "truncated_normal" uses the same constant).
TRUNCATED_NORMAL_STD = 0.87962566103423978


# ----------------------------------------------------------------------------- HiPPO-LegS
def hippo_legs(N):
    """HiPPO-LegS state matrix and input vector.

    Returns A (N, N) float64 (lower triangular, eigenvalues −1..−N) and B (N,) float64, B_n = sqrt(2n+1).
    """
    q = np.sqrt(2 * np.arange(N) + 1.0)                                   # (N,)
    A = -np.tril(np.outer(q, q), k=-1) - np.diag(np.arange(N) + 1.0)      # (N, N)
    return A, q.copy()


def hippo_normal(N):
    """The normal part S = A + p pᵀ of HiPPO-LegS, with p_n = sqrt(n + ½).

    Returns S (N, N) float64 and p (N,) float64. S has diagonal −½ and S + ½I is skew-symmetric.
    """
    A, _ = hippo_legs(N)
    p = np.sqrt(np.arange(N) + 0.5)                                       # (N,)
    return A + np.outer(p, p), p                                          # (N, N), (N,)


def hippo_n_diagonalization(N):
    """Diagonalise HiPPO-N: S = V diag(Λ) Vᴴ.

    Returns Lambda (N,) complex128 with Re Λ = −½ and Im Λ = ω ascending (so the first ⌊N/2⌋ have
    negative imaginary parts), and V (N, N) complex128 unitary (columns are eigenvectors).
    """
    S, _ = hippo_normal(N)
    omega, V = np.linalg.eigh(-1j * (S + 0.5 * np.eye(N)))                # (N,), (N, N)
    return -0.5 + 1j * omega, V


def s5_hippo_blocks(d_state, blocks, conj_sym):
    """S5's block-diagonal HiPPO-N initialisation (SPEC §4.2).

    d_state: N stored states; blocks: number of diagonal blocks; conj_sym: keep one state per
    conjugate pair. Local size P = 2N if conj_sym else N, block size b = P / blocks (callers validate
    divisibility, and evenness of b under conj_sym). Each block is HiPPO-N of size b; with conj_sym
    only its first b/2 eigenpairs (negative imaginary parts) are kept.
    Returns Lambda (N,) complex128 and V (P, N) complex128 (block-diagonal; V⁻¹ = Vᴴ on its range).
    """
    local_P = 2 * d_state if conj_sym else d_state
    b = local_P // blocks
    Lambda_b, V_b = hippo_n_diagonalization(b)                            # (b,), (b, b)
    kept = b // 2 if conj_sym else b
    Lambda = np.tile(Lambda_b[:kept], blocks)                             # (N,)
    V = block_diag(*[V_b[:, :kept]] * blocks)                             # (P, N)
    return Lambda, V


# ----------------------------------------------------------------------------- random initialisers
def truncated_normal(rng, shape, variance):
    """Normal draws truncated to ±2 standard deviations, rescaled so the variance is `variance`.

    This is "truncated lecun normal" when variance = 1/fan_in. Returns float64 of `shape`.
    Out-of-range draws are redrawn (rejection), so the sequence depends only on the generator.
    """
    z = rng.standard_normal(shape)                                        # shape
    outside = np.abs(z) > 2
    while outside.any():
        z[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(z) > 2
    return z * np.sqrt(variance) / TRUNCATED_NORMAL_STD


def log_uniform_dt(rng, shape, dt_min, dt_max):
    """log Δ ~ U[log dt_min, log dt_max), so Δ = exp(log_dt) ∈ [dt_min, dt_max). Returns float64 of `shape`."""
    return rng.uniform(np.log(dt_min), np.log(dt_max), shape)


def check_dt_range(dt_min, dt_max):
    """0 < dt_min <= dt_max, both finite. Returns them as floats (ValueError/TypeError name the rule)."""
    for name, value in (("dt_min", dt_min), ("dt_max", dt_max)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"{name} must be a real number; got {value!r}")
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be finite and > 0; got {value}")
    if dt_min > dt_max:
        raise ValueError(f"dt_min must be <= dt_max; got dt_min={dt_min}, dt_max={dt_max}")
    return float(dt_min), float(dt_max)


def check_real(value, name, low=-np.inf, high=np.inf, low_open=False):
    """A finite real number in [low, high] ((low, high] when low_open). Returns it as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number; got {value!r}")
    if not np.isfinite(value) or value > high or value < low or (low_open and value == low):
        interval = f"{'(' if low_open else '['}{low}, {high}]"
        raise ValueError(f"{name} must be finite and in {interval}; got {value}")
    return float(value)
