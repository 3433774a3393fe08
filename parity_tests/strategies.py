"""All hypothesis strategies of the suite, in one module (STYLE 8)."""
import numpy as np
from hypothesis import strategies as st

PRIMES = (2, 3, 5, 7, 11, 13, 17, 31, 61, 127, 251)
POWERS_OF_TWO_NEAR = tuple(sorted({n for k in range(1, 9) for n in (2 ** k - 1, 2 ** k, 2 ** k + 1) if n >= 1}))


def sequence_lengths(max_len=300):
    """L >= 1 with 1, primes and 2^k ± 1 favoured, then anything up to max_len."""
    special = [1] + [n for n in PRIMES + POWERS_OF_TWO_NEAR if n <= max_len]
    return st.one_of(st.sampled_from(sorted(set(special))), st.integers(1, max_len))


batch_sizes = st.integers(1, 3)
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


def lengths_vector(rng, batch, L):
    """Valid lengths in [1, L], always including L when batch > 1."""
    lengths = rng.integers(1, L + 1, batch)
    if batch > 1:
        lengths[rng.integers(batch)] = L
    return lengths
