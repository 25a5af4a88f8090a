"""A real Ray cluster for tests: nodes started with `ray start --block` inside a network namespace of their own.

The namespace has only loopback, so every Ray server (they listen on all interfaces whatever
--node-ip-address says) binds to 127.0.0.1 there and nothing is reachable from outside it, nor anything
outside from it. Every node and driver shares one random auth token (Ray 2.60 token authentication).

Nodes are stopped by PID, never with `ray stop` (which kills every Ray process on the machine by name):
SIGTERM to each node's `ray start --block` (which stops that node's processes), then SIGKILL to whatever is
still in the namespace (`ip netns pids` lists exactly the processes inside it), then the namespace is deleted.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import psutil

PORT = 6379
ADDRESS = f"127.0.0.1:{PORT}"
VENV_BIN = Path(sys.executable).parent
_WAIT_NODES = """
import json, sys, time, ray
want, deadline = int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
while True:
    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) >= want or time.monotonic() > deadline:
        break
    time.sleep(0.5)
print(json.dumps([{"id": n["NodeID"], "resources": n["Resources"]} for n in alive]))
"""


def cluster_or_skip() -> None:
    """Skip the test, saying why, where Ray is not installed or network namespaces cannot be made."""
    import importlib.util

    import pytest

    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is not installed: pip install -e '.[cluster]'")
    why = namespaces_available()
    if why:
        pytest.skip(f"no network namespace for a test cluster: {why}")


def namespaces_available() -> Optional[str]:
    """None when this process may create network namespaces, else why not."""
    if os.geteuid() != 0:
        return "creating a network namespace needs root"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    name = f"edgecnn-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def remove_stale_namespaces() -> None:
    """Namespaces of test runs that were killed (their pytest is gone) and hold no process: deleted."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    for name in listed:
        owner = name.rpartition("-")[2]
        if not (name.startswith("edgecnn-") and owner.isdigit()) or psutil.pid_exists(int(owner)):
            continue
        inside = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
        if not inside:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


class RayTestCluster:
    """Head and worker nodes of one Ray cluster in a loopback-only network namespace."""

    def __init__(self, label: str, health_check_ms: int = 500) -> None:
        self.netns = f"edgecnn-{label}-{os.getpid()}"
        # Short: Ray's unix sockets live under it and a socket path has ~107 characters at most.
        self.tmp = Path(tempfile.mkdtemp(prefix="ecray-", dir="/tmp"))
        self.token = secrets.token_hex(32)
        self.nodes: list[subprocess.Popen] = []
        self.health_check_ms = health_check_ms
        remove_stale_namespaces()
        subprocess.run(["ip", "netns", "add", self.netns], check=True, capture_output=True)
        subprocess.run(["ip", "netns", "exec", self.netns, "ip", "link", "set", "lo", "up"], check=True,
                       capture_output=True)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of every node and driver: the shared token, no usage stats, fast node-death detection."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token, RAY_USAGE_STATS_ENABLED="0",
                   RAY_health_check_period_ms=str(self.health_check_ms), RAY_health_check_timeout_ms="1000",
                   RAY_health_check_failure_threshold="4", RAY_TMPDIR=str(self.tmp), TF_CPP_MIN_LOG_LEVEL="3",
                   PATH=f"{VENV_BIN}:{env.get('PATH', '')}")
        env.update(extra)
        return env

    def command(self, args: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *args]

    def start_head(self, cpus: int = 1) -> subprocess.Popen:
        return self._start("head", ["--head", f"--port={PORT}", "--include-dashboard=false",
                                    f"--temp-dir={self.tmp}"], cpus, {})

    def add_node(self, cpus: int = 1, resources: Optional[dict] = None, **env: str) -> subprocess.Popen:
        extra = [f"--resources={json.dumps(resources)}"] if resources else []
        return self._start(f"node{len(self.nodes)}", [f"--address={ADDRESS}", *extra], cpus, env)

    def _start(self, name: str, args: list[str], cpus: int, env: dict) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(self.command([str(VENV_BIN / "ray"), "start", *args, f"--num-cpus={cpus}",
                                              "--node-ip-address=127.0.0.1", "--object-store-memory=100000000",
                                              "--disable-usage-stats", "--block"]),
                                env=self.env(**env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        proc.log_file = log
        self.nodes.append(proc)
        return proc

    def wait_nodes(self, count: int, timeout_s: float = 240.0) -> list[dict]:
        """The alive nodes ({"id", "resources"}) once there are ``count``; AssertionError with the logs if not."""
        done = self.run([sys.executable, "-c", _WAIT_NODES, ADDRESS, str(count), str(timeout_s)],
                        timeout=timeout_s + 120)
        nodes = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 and done.stdout.strip() else []
        if len(nodes) < count:
            raise AssertionError(f"{len(nodes)} of {count} Ray nodes came up: {done.stderr[-2000:]}\n{self.logs()}")
        return nodes

    def run(self, args: list[str], timeout: float = 900.0, **env: str) -> subprocess.CompletedProcess:
        """Run a command (a driver) inside the namespace, with the cluster's environment."""
        return subprocess.run(self.command(args), env=self.env(**env), capture_output=True, text=True,
                              timeout=timeout)

    def popen(self, args: list[str], **env: str) -> subprocess.Popen:
        return subprocess.Popen(self.command(args), env=self.env(**env), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    @staticmethod
    def raylet(node: subprocess.Popen) -> psutil.Process:
        """The raylet of the node started by ``node`` (its `ray start --block` process)."""
        for child in psutil.Process(node.pid).children(recursive=True):
            if child.name() == "raylet":
                return child
        raise AssertionError(f"node {node.pid} has no raylet")

    @staticmethod
    def busy_workers(node: subprocess.Popen, task: str = "run_chunk") -> list[psutil.Process]:
        """Worker processes of the node's raylet now running ``task`` (Ray titles them ray::<task>)."""
        found = []
        for child in RayTestCluster.raylet(node).children(recursive=True):
            try:
                if " ".join(child.cmdline()).startswith(f"ray::{task}"):
                    found.append(child)
            except psutil.Error:
                continue
        return found

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in sorted(self.tmp.glob("*.log")))

    def stop_node(self, node: subprocess.Popen, grace_s: float = 15.0) -> None:
        """Stop one node by its PID: SIGTERM makes `ray start --block` stop that node's processes."""
        if node.poll() is None:
            node.send_signal(signal.SIGTERM)
            try:
                node.wait(grace_s)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait(5)
        node.log_file.close()

    def stop(self) -> None:
        """Every node by PID, then anything left inside the namespace, then the namespace and the temp folder."""
        for node in reversed(self.nodes):
            self.stop_node(node)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            left = self._pids_inside()
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _pids_inside(self) -> list[int]:
        done = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True, text=True)
        return [int(p) for p in done.stdout.split() if p.strip().isdigit()]
