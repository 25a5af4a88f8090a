"""Wall-clock and CPU seconds of each stage of the check (CPU: this process and every child it waited for,
QEMU's translation included), so that figures taken on a shared machine can be read against an idle one."""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Callable, Iterator


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


class Stages:
    def __init__(self, log: Callable[[str], None] = lambda _: None) -> None:
        self.log = log
        self.seconds: dict[str, dict[str, float]] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), cpu_seconds()
        self.log(f"== {name}")
        try:
            yield
        finally:
            self.seconds[name] = {"wall_s": round(time.perf_counter() - wall, 1),
                                  "cpu_s": round(cpu_seconds() - cpu, 1)}
            self.log(f"== {name}: {self.seconds[name]}")
