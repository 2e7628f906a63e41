"""PyTorch's own distributed training around an optimized module: DistributedDataParallel
(gloo, two processes on this machine) over tessera.optimize, each process on half of every
batch, trains to the parameters that eager PyTorch reaches in one process on the whole
batches (float64, 1e-10). DDP averages the Tessera-computed gradients through the autograd
hooks of the module's own parameters. The one-process reference is all PyTorch (DPP in its
pure-PyTorch form)."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

import dpp_torch
import tessera
import tessera.nn

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

STEPS, BATCH = 5, 8


def make_model(pool=tessera.nn.DetailPreservingPool2d):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ReLU(),
        pool(6, kernel_size=2, epsilon=0.03125),
        torch.nn.Flatten(), torch.nn.Linear(6 * 4 * 4, 5)).double()


def data():
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(BATCH, 3, 8, 8, generator=g, dtype=torch.float64),
             torch.randint(0, 5, (BATCH,), generator=g)) for _ in range(STEPS)]


def train(model, batches):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for x, y in batches:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


def worker(rank, world, init, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        model = make_model()
        half = BATCH // world
        shards = [(x[rank * half:(rank + 1) * half], y[rank * half:(rank + 1) * half])
                  for x, y in data()]
        fast = tessera.optimize(model, (shards[0][0],))
        train(torch.nn.parallel.DistributedDataParallel(fast), shards)
        if rank == 0:
            torch.save(model.state_dict(), out)
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_match_one(tmp_path):
    out = tmp_path / "ddp.pt"
    mp.spawn(worker, args=(2, f"file://{tmp_path / 'rendezvous'}", str(out)), nprocs=2,
             join=True)
    reference = make_model(dpp_torch.DetailPreservingPool2d)  # all PyTorch
    train(reference, data())
    got = torch.load(out)
    for name, value in reference.state_dict().items():
        err = (got[name] - value).abs().max().item()
        assert err < 1e-10, (name, err)
