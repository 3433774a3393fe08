"""lrnn-spec reference: the NumPy/Numba specification of linear RNN layers (float64, no autograd)."""
from .discretize import METHODS, discretize, discretize_dense, phi1
from .scan import SCAN_METHODS, combine, scan, scan_dense, scan_reverse, scan_vjp
from .layers.multiresconv import MultiresConv
from .layers.centaurus import Centaurus
from .layers.lssl import LSSL
from .layers import REGISTRY
from .layers.lru import LRU
from .layers.s5 import S5
from .layers.s4d import S4D
from .layers.s6 import S6
from .layers.rglru import RGLRU
from .layers.s7 import S7
from .layers.gla import GLA
from .layers.gated_deltanet import GatedDeltaNet
from .layers.deltaproduct import DeltaProduct
from .pooling import final_pool, pool
from .classifier import Classifier, HierarchicalClassifier
