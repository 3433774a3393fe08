"""lrnn-spec reference: the NumPy/Numba specification of linear RNN layers (float64, no autograd)."""
from .discretize import METHODS, discretize, discretize_dense, phi1
from .scan import SCAN_METHODS, combine, scan, scan_dense, scan_reverse, scan_vjp
