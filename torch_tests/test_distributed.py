"""Distributed data-parallel training of the Classifier: two spawned CPU processes (gloo, localhost) take
a few Adam steps on halves of a batch; their gradients and parameters equal a single process on the
whole batch (DDP averages gradients; with equal halves the mean of the two mean losses is the mean loss).

Measured by hand before this test existed: 4 Adam steps matched to 9e-8 (float32). Here the model runs in
float64, so the only difference is the order of one addition (the all-reduce), and the table's float64 row
applies. The README's `torchrun` recipe runs the same loop.
"""
import os
import socket
import tempfile

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import torch_backend
from parity_tests.tolerances import assert_close

STEPS = 3
WORLD = 2


def build_model():
    torch.manual_seed(0)
    model = torch_backend.Classifier(input_dim=3, num_classes=4, d_model=8, d_state=4, n_layers=2,
                                     lrnn_cls=["S5", "LRU"], intermediate_pooling=["mean", "none"],
                                     dropout=0.0, seed=0)
    return model.double()


def batch():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(4, 9, 3)))                            # (b, L, input_dim)
    tau = torch.from_numpy(rng.exponential(size=(4, 9)))                        # (b, L)
    return x, torch.tensor([9, 5, 7, 2]), tau, torch.tensor([0, 3, 1, 2])


def train(model, rows):
    """STEPS Adam steps on the given rows of the batch; returns the gradients of the first step."""
    x, lengths, tau, labels = (value[rows] for value in batch())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for step in range(STEPS):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x, lengths, tau), labels)
        loss.backward()
        if step == 0:
            module = getattr(model, "module", model)                                # DDP wraps the model
            first = {name: p.grad.detach().clone() for name, p in module.named_parameters()}
        optimizer.step()
    return first


def worker(rank, port, folder):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        model = torch.nn.parallel.DistributedDataParallel(build_model())
        rows = slice(2 * rank, 2 * rank + 2)                                     # each rank: half the batch
        grads = train(model, rows)
        if rank == 0:
            params = {name: p.detach().clone() for name, p in model.module.named_parameters()}
            torch.save({"grads": grads, "params": params}, os.path.join(folder, "ddp.pt"))
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch built without gloo")
def test_two_process_ddp_equals_one_process():
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(worker, args=(free_port(), folder), nprocs=WORLD, join=True)
        result = torch.load(os.path.join(folder, "ddp.pt"))
    single = build_model()
    grads = train(single, slice(0, 4))
    for name, p in single.named_parameters():
        assert_close(result["grads"][name].numpy(), grads[name].numpy(), "float64", what=f"gradient {name}")
        assert_close(result["params"][name].numpy(), p.detach().numpy(), "float64", what=f"parameter {name}")
