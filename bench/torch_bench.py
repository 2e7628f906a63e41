"""PyTorch eager on one model and one input, for bench/cpu.py; one process per measurement so
that its peak resident set is PyTorch's alone.

    /usr/bin/python3 bench/torch_bench.py --save-weights MODEL FILE.pt
    /usr/bin/python3 bench/torch_bench.py MODEL FILE.pt INPUT.npy [--threads 2] [--iters 5]
        [--warmup 2] [--output Y.npy]

The first form builds the model as the test suite does (tests/python/models.py: same seed,
same weights as its ONNX exports) and saves its state dict; building it runs a calibration
pass in training mode, which would otherwise inflate the peak memory of the measuring process.
The second loads those weights into the torchvision architecture, then times warm-up and
timed runs under torch.no_grad() in eval mode and prints one JSON object: torch's version,
min_ms, median_ms, times_ms, max_rss_kib (peak resident set, model loading included).
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "python"))
import models  # noqa: E402


def save_weights(name, path):
    tmp = f"{path}.tmp-{os.getpid()}"
    torch.save(models._make_model(name).state_dict(), tmp)
    os.replace(tmp, path)


def bench(args):
    torch.set_num_threads(args.threads)
    model = models.architecture(args.model)
    model.load_state_dict(torch.load(args.weights))
    model.eval()
    x = torch.from_numpy(np.load(args.input))
    times = []
    with torch.no_grad():
        for _ in range(args.warmup):
            model(x)
        for _ in range(args.iters):
            start = time.perf_counter()
            y = model(x)
            times.append((time.perf_counter() - start) * 1e3)
    if args.output:
        np.save(args.output, y.numpy().astype(np.float32))
    print(json.dumps({
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "min_ms": min(times),
        "median_ms": statistics.median(times),
        "times_ms": times,
        "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }))


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--save-weights":
        save_weights(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=models.MODEL_NAMES + models.SEGMENTATION_NAMES
                        + models.SEQUENCE_NAMES + models.zoo_names("classification"))
    parser.add_argument("weights")
    parser.add_argument("input")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--output")
    bench(parser.parse_args())


if __name__ == "__main__":
    main()
