"""``--ray``: run an artifact over many samples as chunks on a Ray cluster, with the same results as a local run.

Ray is an optional extra (``pip install 'edgecnn[cluster]'``), imported (cluster_connect.import_ray) only when
``--ray`` is given. The machine running edgecnn (the driver) must be a node of the cluster: the head, or joined
with ``ray start --address=HEAD:PORT --num-cpus=0``. Other nodes need the device side only (``edgecnn[device]``
and onnxruntime, no TensorFlow); edgecnn's own code (the contract modules and edgecnn.devices) reaches them
through Ray's runtime environment (``py_modules``), so every node runs the driver's version.

A run: the artifact's bytes and the encoded samples go to the object store once (each node fetches them once);
each chunk of samples is one task of one CPU (``scheduling_strategy="SPREAD"``), which opens the device runner
on its node (edgecnn.devices.cluster_task) with intra-op threads = its CPUs and invokes the chunk in the same
batches as the local run. Chunks whose worker or node dies are run again elsewhere (``max_retries``); a chunk
that raises is not retried. Results are put back in sample order: identical to a local run, sample for sample.
"""
from __future__ import annotations

import collections
import hashlib
import logging
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from edgecnn import errors
from edgecnn.devices.cluster_connect import (ADDRESS, driver_log, import_ray, probe, resolve_address,
                                            stage_code)
from edgecnn.errors import ClusterError, RuntimeMissingError, UsageError, first_line

DEFAULT_CHUNK = 1000  # samples per task: a task costs ~10 ms of overhead, ~1 % at ~1 ms per sample and over
DEFAULT_RETRIES = 4
_KEPT_SAMPLE_SETS = 4
ChunkProgress = Callable[[int], None]  # called with 1 for every chunk done


@dataclass(frozen=True)
class ClusterOptions:
    """Where and how to run on Ray: ``address`` "auto" (RAY_ADDRESS, else the cluster `ray start` started on this
    machine; never a new one) or HOST:PORT of the head's GCS; ``chunk`` samples per task."""

    address: str = "auto"
    chunk: int = DEFAULT_CHUNK
    cpus_per_task: int = 1     # the task's CPUs, and the runner's intra-op threads
    max_retries: int = DEFAULT_RETRIES  # re-runs of a chunk whose worker or node died
    connect_timeout_s: float = 10.0

    def validate(self) -> None:
        if self.address != "auto" and not ADDRESS.match(self.address):
            raise UsageError(f"--ray {self.address!r} is not an address",
                             "give auto (a running cluster) or HOST:PORT of the head, e.g. 10.0.0.5:6379")
        if self.address != "auto" and not 0 < int(ADDRESS.match(self.address)["port"]) < 65536:
            raise UsageError(f"--ray {self.address}: the port is outside 1..65535")
        if self.chunk < 1:
            raise UsageError(f"--ray-chunk {self.chunk} is not positive", "give samples per task, e.g. 1000")
        if self.cpus_per_task < 1 or self.max_retries < 0:
            raise UsageError("cpus_per_task must be positive and max_retries zero or more")


@dataclass(frozen=True)
class Placement:
    """Where one run's chunks ran: chunks per node label, and the nodes that died during the run."""

    chunks: tuple[tuple[str, int], ...]
    lost_nodes: tuple[str, ...] = ()

    def line(self) -> str:
        total = sum(count for _, count in self.chunks)
        where = ", ".join(f"{node}: {count}" for node, count in self.chunks)
        text = f"Ray: {total} chunk(s) on {len(self.chunks)} node(s) ({where})"
        if self.lost_nodes:
            text += f"; lost during the run (chunks they held re-ran elsewhere): {', '.join(self.lost_nodes)}"
        return text


class Cluster:
    """A connection to a Ray cluster for one edgecnn command. Use as a context manager.

    Raises ClusterError (one line) when the cluster cannot be reached or joined, refuses this driver's auth
    token or has no CPU for a task; RuntimeMissingError when Ray is not installed here.
    """

    def __init__(self, options: ClusterOptions = ClusterOptions()) -> None:
        options.validate()
        self.options = options
        self.address = options.address
        self.totals: collections.Counter = collections.Counter()
        self.lost: list[str] = []
        self._seen: dict[str, str] = {}  # node id -> label of every node alive when a run started
        self._ray: Any = None
        self._task: Any = None
        self._staging: Optional[Path] = None
        self._samples: collections.OrderedDict = collections.OrderedDict()
        self._restore_printer: Callable[[], None] = lambda: None
        self.log_path: Optional[Path] = None  # where Ray's messages to this driver went

    def __enter__(self) -> "Cluster":
        ray = import_ray()
        self.address = resolve_address(self.options.address)
        probe(self.address, self.options.connect_timeout_s)
        self._staging = Path(tempfile.mkdtemp(prefix="edgecnn-ray-code-"))
        try:
            self._connect(ray)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._samples.clear()
        if self._ray is not None:
            self._ray.shutdown()
            self._ray = None
        self._restore_printer()
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None

    def _connect(self, ray: Any) -> None:
        self._restore_printer = self._divert_messages()
        try:
            ray.init(address=self.address, runtime_env={"py_modules": [str(stage_code(self._staging))]},
                     log_to_driver=False, logging_level=logging.ERROR, namespace="edgecnn")
        except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, its own types
            raise ClusterError(f"cannot join the Ray cluster at {self.address} ({first_line(exc)})",
                               "run edgecnn on a node of the cluster: its head, or a machine joined with "
                               f"`ray start --address={self.address} --num-cpus=0`") from None
        self._ray = ray
        self.log_path = driver_log()
        cpus = ray.cluster_resources().get("CPU", 0)
        if cpus < self.options.cpus_per_task:
            raise ClusterError(f"the Ray cluster at {self.address} has {cpus:g} CPU(s), a task needs "
                               f"{self.options.cpus_per_task}", "start its nodes with --num-cpus N (N >= 1)")
        from edgecnn.devices.cluster_task import run_chunk  # noqa: PLC0415

        self._task = ray.remote(run_chunk).options(
            num_cpus=self.options.cpus_per_task, max_retries=self.options.max_retries, retry_exceptions=False,
            scheduling_strategy="SPREAD")

    def _divert_messages(self) -> Callable[[], None]:
        """Ray prints the cluster's messages (a raylet that died, with its last log lines) on this driver's stdout,
        which would break --json output and the tables: they go to ``log_path`` (Ray's session logs) instead.
        Returns what puts Ray's printer back."""
        try:
            from ray._private import worker as ray_worker  # noqa: PLC0415
        except ImportError:
            return lambda: None
        original = getattr(ray_worker, "print_to_stdstream", None)
        if original is None:
            return lambda: None

        def to_log(data: dict, ignore_prefix: bool = False) -> None:
            path = self.log_path or Path(tempfile.gettempdir()) / "edgecnn-ray-driver.log"
            with open(path, "a", encoding="utf-8") as log:
                for line in data.get("lines", []):
                    log.write(f"({data.get('pid', 'ray')}) {line}\n")

        ray_worker.print_to_stdstream = to_log
        return lambda: setattr(ray_worker, "print_to_stdstream", original)

    @property
    def nodes(self) -> int:
        """Alive nodes of the cluster now."""
        return sum(1 for node in self._ray.nodes() if node.get("Alive"))

    def chunk_size(self, batch: int) -> int:
        """Samples per task: ``chunk`` rounded down to a multiple of the local batch (at least one batch)."""
        return max(batch, self.options.chunk // batch * batch)

    def chunk_count(self, samples: int, batch: int) -> int:
        return -(-samples // self.chunk_size(batch)) if samples else 0

    def run(self, path: Path, target: str, encoded: np.ndarray, batch: int,
            progress: Optional[ChunkProgress] = None) -> tuple[np.ndarray, Placement]:
        """Raw outputs of the artifact at ``path`` on ``target`` for ``encoded`` (N, ...), invoked ``batch``
        samples at a time as a local run does; and where its chunks ran.

        Raises the node's own error (RuntimeMissingError, ModelLoadError, DataError...) naming the node when a
        node cannot run the artifact; ClusterError when a chunk is lost more than ``max_retries`` times.
        """
        ray = self._ray
        path = Path(path)
        blob = path.read_bytes()
        sha = hashlib.sha256(blob).hexdigest()
        blob_ref = ray.put(np.frombuffer(blob, dtype=np.uint8))
        data_ref = self._put_samples(encoded)
        size = self.chunk_size(batch)
        bounds = [(start, min(start + size, len(encoded))) for start in range(0, len(encoded), size)]
        alive = self._alive_nodes()
        self._seen.update(alive)
        refs = {self._task.remote(blob_ref, sha, path.suffix, target, self.options.cpus_per_task, data_ref,
                                  start, stop, batch): index for index, (start, stop) in enumerate(bounds)}
        outputs, where = self._gather(refs, path.name, progress)
        del blob_ref
        lost = tuple(label for node_id, label in alive.items() if node_id not in self._alive_nodes())
        self._note_lost(lost)
        self.totals.update(where)
        placement = Placement(tuple(sorted(collections.Counter(where).items())), lost)
        if not outputs:
            return np.zeros((0,), np.float32), placement
        return np.concatenate(outputs), placement

    def summary(self) -> Placement:
        """Where every chunk of this connection ran, all runs together, and the nodes lost since the first run
        (also one that died at the end of a run, before the cluster had noticed)."""
        if self._ray is not None and self._seen:
            alive = self._alive_nodes()
            self._note_lost(tuple(label for node_id, label in self._seen.items() if node_id not in alive))
        return Placement(tuple(sorted(self.totals.items())), tuple(self.lost))

    def _note_lost(self, labels: tuple[str, ...]) -> None:
        self.lost += [label for label in labels if label not in self.lost]

    def _gather(self, refs: dict, name: str, progress: Optional[ChunkProgress]) -> tuple[list, list]:
        ray = self._ray
        outputs: list = [None] * len(refs)
        where: list[str] = []
        pending = list(refs)
        last_check = time.monotonic()
        # The other chunks are not cancelled when one fails: ray.cancel racing a chunk's completion can abort
        # the driver inside Ray ("Tried to complete task that was not pending", seen here with Ray 2.60). They
        # are short, and they end with this connection, when the job's tasks are cleaned up.
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=1.0)
            for ref in done:
                node, out, failure = self._result(ray, ref, name)
                if failure is not None:
                    raise _node_error(failure, node, name)
                outputs[refs[ref]] = out
                where.append(node)
                if progress is not None:
                    progress(1)
            if not done and time.monotonic() - last_check > 5.0:
                last_check = time.monotonic()
                self._check_capacity()
        return outputs, where

    def _result(self, ray: Any, ref: Any, name: str) -> tuple:
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # the task raised (not retried): the runtime's own exception
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            node = _node_in(str(exc))
            raise ClusterError(f"a chunk of {name} failed on {node or 'a Ray node'} "
                               f"({type(cause).__name__}: {first_line(cause)})") from None
        except ray.exceptions.RayError as exc:  # its worker or node died more than max_retries times
            raise ClusterError(f"a chunk of {name} was lost {self.options.max_retries + 1} times "
                               f"({type(exc).__name__}: {first_line(exc)})",
                               "check the nodes (`ray status`) and run again") from None

    def _check_capacity(self) -> None:
        """Tasks wait forever when no node with a CPU is left: say so instead."""
        if self._ray.cluster_resources().get("CPU", 0) < self.options.cpus_per_task:
            raise ClusterError(f"no node with a CPU is left in the Ray cluster at {self.address}",
                               "start or re-join worker nodes, then run again")

    def _alive_nodes(self) -> dict[str, str]:
        return {n["NodeID"]: f"{n.get('NodeManagerHostname', '?')} ({n.get('NodeManagerAddress', '?')}, "
                             f"{n['NodeID'][:8]})" for n in self._ray.nodes() if n.get("Alive")}

    def _put_samples(self, encoded: np.ndarray) -> Any:
        """One object per distinct sample array (artifacts with the same input dtype share it)."""
        encoded = np.ascontiguousarray(encoded)
        key = hashlib.sha256(memoryview(encoded).cast("B")).hexdigest() + f"{encoded.dtype}{encoded.shape}"
        if key not in self._samples:
            self._samples[key] = self._ray.put(encoded)
            while len(self._samples) > _KEPT_SAMPLE_SETS:
                self._samples.popitem(last=False)
        self._samples.move_to_end(key)
        return self._samples[key]


def _node_error(failure: tuple[str, str], node: str, name: str) -> Exception:
    """The node's own error, of its own class when edgecnn has it, naming the node."""
    kind, message = failure
    cls = getattr(errors, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, errors.EdgecnnError)):
        cls = ClusterError
    hint = "install edgecnn[device] and onnxruntime on every node" if cls is RuntimeMissingError else ""
    return cls(f"Ray node {node} cannot run {name}: {message}", hint)


def _node_in(text: str) -> Optional[str]:
    found = re.search(r"\bip=([0-9A-Za-z.:_-]+)", text)
    return found.group(1) if found else None
