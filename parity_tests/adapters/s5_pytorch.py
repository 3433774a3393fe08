"""Adapter: the S5 layer of `s5-pytorch==0.2.1` (`s5.S5`), checked as this project's S5.

    pip install --no-deps s5-pytorch==0.2.1 einops==0.8.1
    pytest parity_tests --backend parity_tests.adapters.s5_pytorch

The package's S5SSM holds Λ (P,) complex, B (P, H, 2) real (re, im), C (H, P) complex, D (H,), log_step (P,);
y = Re(C x) + D u with x_t = Λ̄ x_{t−1} + B̄ u_t, Λ̄, B̄ by "zoh" or "bilinear", Δ = step_scale·exp(log_step)
(`step_scale` (b, L) gives per-step Δ, i.e. this project's integration timesteps τ). The adapter copies a
reference S5's parameters into it (a conjugate-symmetric reference has no counterpart: the package has no
κ = 2 read-out) and maps the rest of the protocol onto it:

* lengths: each sequence runs alone on its first len steps (the package has no lengths);
* `check_finite`: checked here (the package has no such check); `method`: only the package's one scan;
* step: `S5SSM.forward_rnn` per batch element; init_state: the package's `initial_state` (as a user calls it);
* kernel: none (the package has no convolution view): Unsupported;
* gradients: the package's parameters, renamed to the reference's (Λ → Lambda_re/_im, B[..., 0/1] → B_re/_im,
  C → C_re/_im, log_step → log_dt).

Declared: discretisations zoh and bilinear (the package's two). Not declared away, so that the suite reports them:
B̃ rounded to complex64 whatever the module's precision (`as_complex`), the zero-order hold's 1/λ (NaN at λ = 0,
cancellation at small |λΔ|), `initial_state()` reading an attribute S5SSM does not have.
"""
import torch

try:
    import s5 as package
except ImportError as error:
    raise ImportError("parity_tests.adapters.s5_pytorch needs s5-pytorch==0.2.1 and einops "
                      "(pip install --no-deps s5-pytorch==0.2.1 einops==0.8.1)") from error

from parity_tests.backend import Unsupported
from torch_backend.testing import asarray, cast, device_available, to_numpy, vjp

__all__ = ["asarray", "to_numpy", "device_available", "vjp", "parameter_vjp", "from_reference", "cast",
           "supports", "DECLARATIONS"]
DECLARATIONS = {"layers": ("S5",), "discretizations": ("zoh", "bilinear"), "methods": {"S5": ()}}


def supports(subject, config):
    """None when the package can express the reference configuration, else the reason."""
    if subject == "S5" and config.get("conj_sym"):
        return "conj_sym=True: s5-pytorch has no conjugate-pair (κ = 2) read-out"
    if subject == "S5" and config.get("clip_eigs"):
        return "clip_eigs=True: s5-pytorch has no clip_eigs"
    if subject == "S5" and config.get("bidirectional"):
        return "bidirectional=True: not mapped by this adapter"
    return None


class PackageS5(torch.nn.Module):
    """s5.S5 holding a reference S5's parameters, called like the reference."""

    def __init__(self, reference):
        super().__init__()
        p, config = reference.params, reference.config
        H, P = p["C_re"].shape                                                           # (H, P)
        self.config, self.step_rescale = dict(config), float(config["step_rescale"])
        self.s5 = package.S5(H, state_width=P, bcInit="dense")
        ssm = self.s5.seq
        ssm.discretize = {"zoh": package.discretize_zoh, "bilinear": package.discretize_bilinear}[
            config["discretization"]]
        with torch.no_grad():
            ssm.Lambda = torch.nn.Parameter(torch.complex(torch.as_tensor(p["Lambda_re"]), torch.as_tensor(p["Lambda_im"])))
            ssm.B = torch.nn.Parameter(torch.stack([torch.as_tensor(p["B_re"]), torch.as_tensor(p["B_im"])], -1))
            ssm.C = torch.nn.Parameter(torch.complex(torch.as_tensor(p["C_re"]), torch.as_tensor(p["C_im"])))
            ssm.D = torch.nn.Parameter(torch.as_tensor(p["D"]))
            ssm.log_step = torch.nn.Parameter(torch.as_tensor(p["log_dt"]))

    def forward(self, x, lengths=None, integration_timesteps=None, *, initial_state=None, return_state=False,
                check_finite=True, method=None):
        if method is not None:
            raise Unsupported(f"method={method!r}: s5-pytorch has one scan")
        if check_finite and not torch.isfinite(x).all():
            raise ValueError("x must be finite (s5-pytorch adapter)")
        if x.ndim != 3 or x.shape[-1] != self.s5.width:
            raise ValueError(f"x must have shape (b, L, H={self.s5.width}); got {tuple(x.shape)}")
        tau = torch.ones(x.shape[:2], dtype=x.dtype, device=x.device) if integration_timesteps is None \
            else integration_timesteps                                                   # (b, L)
        lengths = [x.shape[1]] * x.shape[0] if lengths is None else [int(n) for n in lengths]
        outputs, finals = [], []
        for i, n in enumerate(lengths):                  # the package has no lengths: each sequence alone
            state = None if initial_state is None else initial_state[i:i + 1]
            y, final = self.s5(x[i:i + 1, :n], step_scale=self.step_rescale * tau[i:i + 1, :n], state=state,
                               return_state=True)
            outputs.append(torch.nn.functional.pad(y, (0, 0, 0, x.shape[1] - n)))
            finals.append(final)
        y, final = torch.cat(outputs), torch.cat(finals)                                 # (b, L, H), (b, P)
        return (y, final) if return_state else y

    def init_state(self, batch):
        return self.s5.initial_state(batch)

    def step(self, x_t, state, integration_timestep=None):
        scale = self.step_rescale * (1.0 if integration_timestep is None else integration_timestep)
        pairs = [self.s5.seq.forward_rnn(x_t[i], state[i], step_scale=scale if not torch.is_tensor(scale) else scale[i])
                 for i in range(x_t.shape[0])]
        return torch.stack([y for y, _ in pairs]), torch.stack([s for _, s in pairs])

    def kernel(self, L):
        raise Unsupported("s5-pytorch has no convolution kernel view")


def from_reference(obj):
    if type(obj).__name__ != "S5":
        raise Unsupported(f"s5-pytorch has no {type(obj).__name__}")
    return PackageS5(obj)


def parameter_vjp(module, call, cotangent):
    """Gradients of Re<cotangent, call(module)> for the package's parameters, under the reference's names."""
    ssm = module.s5.seq
    params = [ssm.Lambda, ssm.B, ssm.C, ssm.D, ssm.log_step]
    out = call(module)
    loss = torch.sum(cotangent * out)
    grads = [torch.zeros_like(p) if g is None else g
             for p, g in zip(params, torch.autograd.grad(loss, params, allow_unused=True))]
    g_Lambda, g_B, g_C, g_D, g_log_step = grads
    return {"Lambda_re": g_Lambda.real, "Lambda_im": g_Lambda.imag, "B_re": g_B[..., 0], "B_im": g_B[..., 1],
            "C_re": g_C.real, "C_im": g_C.imag, "D": g_D, "log_dt": g_log_step}
