"""Small helpers the book's pages share: showing library source, plot style, a symbolic scan element.

The book never copies library code into its prose (STYLE 11): `show(obj)` prints the source of the
imported object, so a rename or an edit in the package shows up here on the next build.
"""
import inspect
import numbers

import matplotlib as mpl
from IPython.display import Code


def show(obj):
    """Display the source of a function, class or module with syntax highlighting."""
    return Code(inspect.getsource(obj), language="python")


def use_book_style():
    """One plot style for every page: readable fonts, light grid, crisp PNGs."""
    mpl.rcParams.update({
        "figure.dpi": 150, "savefig.dpi": 150, "figure.figsize": (7.5, 3.6),
        "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
        "font.size": 10, "legend.fontsize": 9, "legend.frameon": False,
        "image.cmap": "viridis", "figure.constrained_layout.use": True,
    })


def spec_round(value, digits=9):
    """A number rounded the way the SPEC prints its regression values (9 decimals)."""
    import numpy as np
    return np.round(np.asarray(value).real, digits)


class Span:
    """A symbolic scan element: the composition e_lo • … • e_hi of the pairs e_t = (a_t, b_t).

    `part` is "a" (the product a_hi ⋯ a_lo) or "b" (the state h_hi reached from h_{lo−1} = 0).
    Multiplying and adding Spans follows the combine rule (a_j a_i, a_j b_i + b_j), so running a
    library scan on arrays of Spans prints *which* elements each step combined instead of numbers.
    The identity pair is the plain numbers (1, 0). Combining non-adjacent ranges raises.
    """

    def __init__(self, part, lo, hi, pending=None):
        self.part, self.lo, self.hi, self.pending = part, lo, hi, pending

    def __repr__(self):
        return f"{self.lo}" if self.lo == self.hi else f"{self.lo}:{self.hi}"

    @staticmethod
    def _join(earlier, later):
        if earlier.hi + 1 != later.lo:
            raise ValueError(f"combine of non-adjacent spans {earlier!r} and {later!r}")
        return earlier.lo, later.hi

    def __mul__(self, other):                   # self is the later a-part, other the earlier part
        if isinstance(other, numbers.Number):
            return self if other == 1 else 0
        lo, hi = self._join(other, self)
        if other.part == "a":
            return Span("a", lo, hi)            # a_j a_i
        return Span("b*", lo, hi)               # a_j b_i, waiting for + b_j

    def __rmul__(self, other):                  # identity 1 or zero on the left
        return self if other == 1 else 0

    def __add__(self, other):
        if isinstance(other, numbers.Number):
            if other != 0:
                raise ValueError("only the identity 0 can be added to a span")
            return Span("b", self.lo, self.hi) if self.part == "b*" else self
        if self.part == "b" and other.part == "b*":
            return other + self                 # addition commutes: b_j + a_j b_i
        if self.part != "b*" or other.part != "b" or self.hi != other.hi:
            raise ValueError(f"cannot add {self.part}-span {self!r} and {other.part}-span {other!r}")
        return Span("b", self.lo, self.hi)      # a_j b_i + b_j

    def __radd__(self, other):
        return self.__add__(other)


def run_checks(*checks):
    """Run test functions of the parity suite here, one line per test (hypothesis tests run their property).

    Each check is a test function or a functools.partial of one (for parametrized tests).
    """
    import functools
    for check in checks:
        if isinstance(check, functools.partial):
            arguments = [_label(a) for a in check.args] + [f"{k}={_label(v)}" for k, v in check.keywords.items()]
            name = f"{check.func.__module__}.{check.func.__name__}({', '.join(arguments)})"
        else:
            name = f"{check.__module__}.{check.__name__}"
        check()
        print(f"passed  {name}")


def parametrized(test, argument):
    """The values pytest parametrizes `argument` of `test` with (its @pytest.mark.parametrize), so a page runs a
    test on exactly the cases the suite does — a property that excludes some layers is never run on them."""
    for mark in getattr(test, "pytestmark", []):
        if mark.name == "parametrize" and mark.args[0] == argument:
            return list(mark.args[1])
    raise ValueError(f"{test.__name__} is not parametrized over {argument!r}")


def _label(value):
    """How run_checks prints an argument: a parity backend by its module name, anything else by repr."""
    return getattr(value, "name", None) if type(value).__name__ == "Backend" else repr(value)


def parity_backend(name="torch_backend", device="cpu"):
    """The parity suite's `backend` fixture outside pytest: the implementation under test (default torch_backend)."""
    from parity_tests import backend
    backend.configure(name, device)
    return backend.current()
