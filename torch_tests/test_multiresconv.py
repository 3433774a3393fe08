"""torch_backend's MultiresConv as a torch module: autograd against finite differences (gradcheck) and the same
refusals as the reference. (Parity of every view with the reference is the conformance suite's business.)"""
import pytest
import torch

from torch_backend.layers.multiresconv import MultiresConv as TorchMultiresConv


@pytest.mark.parametrize("memory_size", [None, 3])
def test_torch_gradcheck(memory_size):
    """Autograd of the float64 module (tree view) against finite differences, for x and g0, g1, w."""
    memory = "fading" if memory_size is None else "uniform"
    module = TorchMultiresConv(2, kernel_size=3, max_len=6, memory=memory, memory_size=memory_size, seed=0).double()
    x = torch.randn(2, 7, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, module.g0, module.g1, module.w)]

    def forward(x, g0, g1, w):
        return torch.func.functional_call(module, {"g0": g0, "g1": g1, "w": w}, (x,))

    assert torch.autograd.gradcheck(forward, leaves)


def test_torch_refuses_like_the_reference():
    module = TorchMultiresConv(2, max_len=8, seed=0)
    x = torch.zeros(1, 4, 2)
    with pytest.raises(ValueError, match="not a recurrence and has no timesteps"):
        module(x, integration_timesteps=torch.ones(1, 4))
    with pytest.raises(ValueError, match="not a recurrence and has no timesteps"):
        module.step(x[:, 0], module.init_state(1), integration_timestep=torch.ones(1))
    with pytest.raises(ValueError, match="method must be one of sequential, fft"):
        module(x, method="chunked")
    with pytest.raises(ValueError, match=r"initial_state must have shape \(1, 7, 2\)"):
        module(x, initial_state=torch.zeros(1, 3, 2))
    assert list(module.state_dict()) == ["g0", "g1", "w"]
    assert module.init_state(3).shape == (3, 7, 2) and module.init_state(3).dtype == torch.float32
