"""Bench fixtures: one bench run over the shared MNIST conversion, reused by the harness and report tests."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def mnist_bench(mnist_convert):
    """bench() of every MNIST artifact on cpu and onnx-cpu, 1 thread, 1,000 held-out digits, offline mode on."""
    from edgecnn.bench.harness import BenchOptions, bench

    options = BenchOptions(runs=60, offline=True, batch=4, progress=False)
    return bench([mnist_convert.out_dir], devices=["cpu", "onnx-cpu"], threads=[1], data="mnist", options=options,
                 command="pytest mnist_bench")
