"""lrnn-spec torch backend: the PyTorch mirror of `reference/` (float32 by default, float64 for parity).

Same file names, function names and layer classes as the reference (STYLE 6). Differentiable
discretisation, a fast differentiable scan (Numba custom op on CPU, chunked scan elsewhere, both
with the reverse-scan backward of SPEC §3) and exact parameter exchange with the reference.
"""
from .discretize import METHODS, discretize, discretize_dense, phi1
from .exchange import from_reference, to_reference
from .layers import REGISTRY, Layer
from .scan import SCAN_METHODS, combine, scan, scan_dense, scan_reverse, scan_vjp

from .pooling import final_pool, pool  # noqa: E402
from .layers import Centaurus, LSSL  # noqa: E402
from .layers import LRU, S5, S4D  # noqa: E402
from .layers import MultiresConv  # noqa: E402
from .layers import S6  # noqa: E402
from .layers import RGLRU, S7  # noqa: E402
from .layers import GLA, GatedDeltaNet, DeltaProduct  # noqa: E402
from .classifier import Classifier, HierarchicalClassifier  # noqa: E402
