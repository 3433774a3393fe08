"""Reference layers, one file each (SPEC §4), and the registry that the parity suite runs over."""
REGISTRY = {}

from .multiresconv import MultiresConv  # noqa: E402

REGISTRY["MultiresConv"] = MultiresConv
from .lru import LRU  # noqa: E402
REGISTRY["LRU"] = LRU
from .centaurus import Centaurus  # noqa: E402
REGISTRY["Centaurus"] = Centaurus
from .lssl import LSSL  # noqa: E402
REGISTRY["LSSL"] = LSSL
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
from .gla import GLA  # noqa: E402
REGISTRY["GLA"] = GLA
from .gated_deltanet import GatedDeltaNet  # noqa: E402
REGISTRY["GatedDeltaNet"] = GatedDeltaNet
from .deltaproduct import DeltaProduct  # noqa: E402
REGISTRY["DeltaProduct"] = DeltaProduct
