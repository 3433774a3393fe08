"""Optimisers for the NumPy-only training loop: SGD and Adam with torch's update rules and defaults (SPEC §11).

    SGD    g ← g + wd·θ;  b ← μ b + (1 − dampening) g (b = g at the first step);  g ← g + μ b (nesterov) or b;
           θ ← θ − lr·g
    Adam   g ← g + wd·θ;  m ← m + (1 − β1)(g − m);  v ← β2 v + (1 − β2) g²;
           θ ← θ − (lr/(1 − β1ᵗ))·m/(sqrt(v)/sqrt(1 − β2ᵗ) + ε)
Same defaults as torch.optim (lr 1e-3; Adam betas (0.9, 0.999), eps 1e-8), and the same order of floating
point operations as torch's single-tensor path, so a float64 run matches torch's to rounding.
Parameters are a dict of float64 arrays updated in place (e.g. `Classifier.params`); `step(grads)` updates the
entries that have a gradient (frozen ones have none). Left out: amsgrad, maximize, AdamW's decoupled decay.
"""
import numpy as np


def _check_hyper(value, name, low=0.0, high=np.inf, low_open=False):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number; got {value!r}")
    if not np.isfinite(value) or value < low or value > high or (low_open and value == low):
        raise ValueError(f"{name} must be in {'(' if low_open else '['}{low}, {high}]; got {value}")
    return float(value)


def _check_params(params):
    if not isinstance(params, dict) or not all(isinstance(v, np.ndarray) and v.dtype == np.float64
                                               for v in params.values()):
        raise TypeError("params must be a dict of float64 NumPy arrays (updated in place), e.g. model.params")
    return params


class Optimizer:
    """Holds the params dict and per-parameter state; `step(grads)` applies one update in place."""

    def __init__(self, params):
        self.params = _check_params(params)
        self.state = {}

    def step(self, grads):
        unknown = [name for name in grads if name not in self.params]
        if unknown:
            raise ValueError(f"gradient for unknown parameter {unknown[0]!r}")
        for name, grad in grads.items():
            grad = np.asarray(grad, dtype=np.float64)
            if grad.shape != self.params[name].shape:
                raise ValueError(f"gradient of {name!r} has shape {grad.shape}; the parameter {self.params[name].shape}")
            self._update(name, self.params[name], grad, self.state.setdefault(name, {}))

    def _update(self, name, param, grad, state):
        """The update rule of a concrete optimiser (SGD, Adam): changes `param` in place from `grad` and `state`."""
        raise TypeError(f"{type(self).__name__} has no update rule: use reference.optim.SGD or reference.optim.Adam")


class SGD(Optimizer):
    """torch.optim.SGD: lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False."""

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params)
        self.lr = _check_hyper(lr, "lr")
        self.momentum = _check_hyper(momentum, "momentum")
        self.dampening = _check_hyper(dampening, "dampening")
        self.weight_decay = _check_hyper(weight_decay, "weight_decay")
        if nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov=True needs momentum > 0 and dampening = 0 (torch's rule)")
        self.nesterov = bool(nesterov)

    def _update(self, name, param, grad, state):
        if self.weight_decay != 0:
            grad = grad + self.weight_decay * param
        if self.momentum != 0:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = grad.copy()
            else:
                buffer = state["momentum_buffer"]
                buffer *= self.momentum
                buffer += (1 - self.dampening) * grad
            buffer = state["momentum_buffer"]
            grad = grad + self.momentum * buffer if self.nesterov else buffer
        param -= self.lr * grad


class Adam(Optimizer):
    """torch.optim.Adam: lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0 (L2 added to the gradient)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params)
        self.lr = _check_hyper(lr, "lr")
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair (beta1, beta2); got {betas!r}")
        self.betas = tuple(_check_hyper(b, f"betas[{i}]", 0.0, 1.0) for i, b in enumerate(betas))
        if self.betas[0] == 1.0 or self.betas[1] == 1.0:
            raise ValueError(f"betas must be < 1; got {betas!r}")
        self.eps = _check_hyper(eps, "eps")
        self.weight_decay = _check_hyper(weight_decay, "weight_decay")

    def _update(self, name, param, grad, state):
        beta1, beta2 = self.betas
        if not state:
            state.update(step=0, exp_avg=np.zeros_like(param), exp_avg_sq=np.zeros_like(param))
        state["step"] += 1
        if self.weight_decay != 0:
            grad = grad + self.weight_decay * param
        exp_avg, exp_avg_sq, step = state["exp_avg"], state["exp_avg_sq"], state["step"]
        exp_avg += (1 - beta1) * (grad - exp_avg)                                # torch: lerp_(grad, 1 − β1)
        exp_avg_sq *= beta2
        exp_avg_sq += (1 - beta2) * grad * grad
        step_size = self.lr / (1 - beta1 ** step)
        denominator = np.sqrt(exp_avg_sq) / np.sqrt(1 - beta2 ** step) + self.eps
        param -= step_size * (exp_avg / denominator)
