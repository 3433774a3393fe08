"""Torch layers, one file each mirroring reference/layers/ (SPEC §4), and the registry of the parity suite.

Layer helpers append two lines each below the marker, e.g.
    from .lru import LRU
    REGISTRY["LRU"] = LRU
"""
from ._base import Layer

REGISTRY = {}

# ---- layers: append `from .<name> import <Class>` and `REGISTRY["<Class>"] = <Class>` below ----
from .multiresconv import MultiresConv  # noqa: E402
REGISTRY["MultiresConv"] = MultiresConv
from .centaurus import Centaurus  # noqa: E402
REGISTRY["Centaurus"] = Centaurus
from .lssl import LSSL  # noqa: E402
REGISTRY["LSSL"] = LSSL
from .lru import LRU  # noqa: E402
REGISTRY["LRU"] = LRU
from .s5 import S5  # noqa: E402
REGISTRY["S5"] = S5
from .s4d import S4D  # noqa: E402
REGISTRY["S4D"] = S4D
from .s6 import S6  # noqa: E402
REGISTRY["S6"] = S6
from .rglru import RGLRU  # noqa: E402
REGISTRY["RGLRU"] = RGLRU
from .s7 import S7  # noqa: E402
REGISTRY["S7"] = S7
