"""`fast_exp(z)`: e^z of a float32 or float64 scalar inside Numba kernels, as a polynomial the compiler can
vectorise (np.exp outside Numba); `fast_phi1(z)`: φ1(z) = (e^z − 1)/z (1 at z = 0) the same way. Numba's `np.exp` is a scalar libm call that stops a loop from vectorising when
the build has no SVML (`numba -s`: "SVML Operational: False" here); the fused selective scan
(reference/kernels/selective.py) computes one exponential per (t, e, n) update with this instead.
Accuracy against np.exp (reference_tests/test_selective_kernel.py): ≤ 1.0 ulp float64, 0.6 ulp float32; NaN, ±inf
and overflow exact; results below ≈ 3e-38 (float32) / 3e-308 (float64) flushed to 0 (no subnormals).
fast_phi1: for |z| < ½ the Taylor polynomial Σ_k z^k/(k+1)! (k ≤ 14 float64, k ≤ 7 float32: the first term left
out is below 2e-18 resp. 1.1e-8 relative there, as φ1 ≥ 0.78 on that interval), else (fast_exp(z) − 1)/z, whose
cancellation costs at most a factor e^z/|e^z − 1| ≤ 2.6 on fast_exp's error for |z| ≥ ½. Against
np.expm1(z)/z in float64 (reference_tests/test_selective_kernel.py): within PHI1_RTOL_BY_DTYPE (1e-14 float64,
1e-6 float32) over z in [−800, 1]; φ1(0) = 1, φ1(−∞) = 0, φ1(∞) = ∞, NaN stays NaN.
"""
import math

import numpy as np
from numba import types
from numba.extending import intrinsic, overload

# fast_exp: e^z = 2^k · e^r, k = ⌊z·log2 e + ½⌋, r = z − k·ln 2 in two steps (ln 2 = hi + lo, k·hi exact);
# e^r by Cephes' expf polynomial (float32) or exp Padé form 1 + 2·r·P(r²)/(Q(r²) − r·P(r²)) (float64).
# 2^k is built as 2^(k−1) from its exponent bits and then doubled, so that k one past the largest exponent (the top
# of the clamp, e^z near the largest float) does not overflow early; below the clamp (e^z under ≈ 3e-38 float32,
# 3e-308 float64) the result is 0 (no subnormals); NaN stays NaN, z past the top gives inf.
_F32 = dict(lo=np.float32(-86.5), hi=np.float32(88.72283), log2e=np.float32(1.44269504088896341),
            ln2_hi=np.float32(0.693359375), ln2_lo=np.float32(-2.12194440e-4),
            p=tuple(np.float32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                                            1.6666665459e-1, 5.0000001201e-1)))
_F64 = dict(lo=-708.0, hi=709.78, log2e=1.4426950408889634073599, ln2_hi=6.93145751953125e-1,
            ln2_lo=1.42860682030941723212e-6,
            p=(1.26177193074810590878e-4, 3.02994407707441961300e-2, 9.99999999999999999910e-1),
            q=(3.00198505138664455042e-6, 2.52448340349684104192e-3, 2.27265548208155028766e-1,
               2.00000000000000000009e0))
F32_LO, F32_HI, F32_LOG2E, F32_LN2_HI, F32_LN2_LO = (_F32[k] for k in ("lo", "hi", "log2e", "ln2_hi", "ln2_lo"))
F32_P0, F32_P1, F32_P2, F32_P3, F32_P4, F32_P5 = _F32["p"]
F64_LO, F64_HI, F64_LOG2E, F64_LN2_HI, F64_LN2_LO = (_F64[k] for k in ("lo", "hi", "log2e", "ln2_hi", "ln2_lo"))
F64_P0, F64_P1, F64_P2 = _F64["p"]
F64_Q0, F64_Q1, F64_Q2, F64_Q3 = _F64["q"]
F32_HALF, F32_ONE, F32_TWO, F32_ZERO, F32_INF = (np.float32(c) for c in (0.5, 1.0, 2.0, 0.0, np.inf))
# φ1's Taylor coefficients 1/(k+1)!, highest power first: k = 14 .. 0 (float64), k = 7 .. 0 (float32).
_PHI1_F64 = tuple(1.0 / math.factorial(k + 1) for k in range(14, -1, -1))
_PHI1_F32 = tuple(np.float32(1.0 / math.factorial(k + 1)) for k in range(7, -1, -1))
(F64_S14, F64_S13, F64_S12, F64_S11, F64_S10, F64_S9, F64_S8, F64_S7, F64_S6, F64_S5, F64_S4, F64_S3, F64_S2,
 F64_S1, F64_S0) = _PHI1_F64
F32_S7, F32_S6, F32_S5, F32_S4, F32_S3, F32_S2, F32_S1, F32_S0 = _PHI1_F32


@intrinsic
def _bits_as_float(typingctx, bits):
    """The float with the bit pattern of an int32 (→ float32) or int64 (→ float64): LLVM's bitcast."""
    target = {types.int32: types.float32, types.int64: types.float64}.get(bits)
    if target is None:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(target))
    return target(bits), codegen


def fast_exp(z):
    """e^z (np.exp here; inside Numba kernels the vectorisable polynomial of the module docstring)."""
    return np.exp(z)


def _fast_exp_float32(z):
    x = min(max(z, F32_LO), F32_HI)
    k = np.floor(x * F32_LOG2E + F32_HALF)
    r = x - k * F32_LN2_HI
    r = r - k * F32_LN2_LO
    p = (((((F32_P0 * r + F32_P1) * r + F32_P2) * r + F32_P3) * r + F32_P4) * r + F32_P5) * (r * r) + r + F32_ONE
    out = p * _bits_as_float(np.int32((np.int32(k) + 126) << 23)) * F32_TWO
    out = F32_ZERO if z < F32_LO else out
    out = F32_INF if z > F32_HI else out
    return z if z != z else out


def _fast_exp_float64(z):
    x = min(max(z, F64_LO), F64_HI)
    k = np.floor(x * F64_LOG2E + 0.5)
    r = x - k * F64_LN2_HI
    r = r - k * F64_LN2_LO
    rr = r * r
    pr = r * ((F64_P0 * rr + F64_P1) * rr + F64_P2)
    p = 1.0 + 2.0 * (pr / (((F64_Q0 * rr + F64_Q1) * rr + F64_Q2) * rr + F64_Q3 - pr))
    out = p * _bits_as_float(np.int64((np.int64(k) + 1022) << 52)) * 2.0
    out = 0.0 if z < F64_LO else out
    out = np.inf if z > F64_HI else out
    return z if z != z else out


@overload(fast_exp)
def _fast_exp_overload(z):
    if z == types.float32:
        return _fast_exp_float32
    if z == types.float64:
        return _fast_exp_float64
    return None


def fast_phi1(z):
    """φ1(z) = (e^z − 1)/z, 1 at z = 0 (NumPy here; inside Numba kernels the vectorisable form of the module
    docstring)."""
    z = np.asarray(z)
    safe = np.where(z == 0, 1, z)                                                   # (...)
    return np.where(z == 0, 1, np.expm1(safe) / safe).astype(z.dtype if z.dtype.kind == "f" else float)


def _fast_phi1_float32(z):
    p = ((((((F32_S7 * z + F32_S6) * z + F32_S5) * z + F32_S4) * z + F32_S3) * z + F32_S2) * z + F32_S1) * z + F32_S0
    q = (fast_exp(z) - F32_ONE) / (z if z != F32_ZERO else F32_ONE)   # (no division by 0: its lane is p)
    q = F32_INF if z == F32_INF else q
    return p if abs(z) < F32_HALF else q


def _fast_phi1_float64(z):
    p = ((((((F64_S14 * z + F64_S13) * z + F64_S12) * z + F64_S11) * z + F64_S10) * z + F64_S9) * z + F64_S8) * z
    p = ((((((((p + F64_S7) * z + F64_S6) * z + F64_S5) * z + F64_S4) * z + F64_S3) * z + F64_S2) * z + F64_S1) * z
          + F64_S0)
    q = (fast_exp(z) - 1.0) / (z if z != 0.0 else 1.0)             # (no division by 0: its lane is p)
    q = np.inf if z == np.inf else q
    return p if abs(z) < 0.5 else q


@overload(fast_phi1)
def _fast_phi1_overload(z):
    if z == types.float32:
        return _fast_phi1_float32
    if z == types.float64:
        return _fast_phi1_float64
    return None
