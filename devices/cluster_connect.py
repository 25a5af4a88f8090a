"""Joining a Ray cluster for ``--ray``: the address, a quick probe, the auth token, and the code the nodes get.

``ray.init`` alone would wait minutes on an address where nothing answers and says little when the token is
wrong, so the address is probed first (a TCP connection, then Ray's GCS handshake) and each failure is one
line. Ray is imported only by ``import_ray``, only for ``--ray``.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Optional

from edgecnn.errors import ClusterError, RuntimeMissingError, first_line

INSTALL_HINT = "pip install 'edgecnn[cluster]' (Ray) on this machine and every node"
ADDRESS = re.compile(r"^\[?(?P<host>[A-Za-z0-9_.:-]+?)\]?:(?P<port>\d{1,5})$")


def import_ray() -> Any:
    """Ray, quiet on this driver (its logs stay in its session folder), or RuntimeMissingError."""
    os.environ.setdefault("RAY_py_gcs_connect_timeout_s", "5")  # a GCS that does not answer: seconds, not minutes
    token_mode = _enable_token_auth()
    try:
        import ray  # noqa: PLC0415 - optional extra, only for --ray
    except ImportError:
        raise RuntimeMissingError("--ray needs Ray, which is not installed", INSTALL_HINT) from None
    if token_mode:
        try:  # Ray reads its config when first imported; a process that imported it earlier must re-read it
            from ray._raylet import Config  # noqa: PLC0415

            Config.initialize("")
        except (ImportError, AttributeError):
            pass
    return ray


def _enable_token_auth() -> bool:
    """Send the cluster's auth token when one is set (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token),
    as Ray itself does only for address "auto"; an explicit RAY_AUTH_MODE is respected. True when it enabled it."""
    if os.environ.get("RAY_AUTH_MODE") or not _token_set():
        return False
    os.environ["RAY_AUTH_MODE"] = "token"
    return True


def driver_log() -> Optional[Path]:
    """edgecnn-driver.log in the Ray session's log folder on this machine, if Ray says where that is."""
    try:
        from ray._private.worker import global_worker  # noqa: PLC0415

        return Path(global_worker.node.get_logs_dir_path()) / "edgecnn-driver.log"
    except Exception:  # noqa: BLE001 - private API of another Ray version: the temp folder then
        return None


def resolve_address(address: str) -> str:
    """HOST:PORT of the cluster. "auto" follows Ray's rule for a driver: RAY_ADDRESS, else the cluster that
    `ray start --head` last started on this machine (Ray's ray_current_cluster file); if there is none,
    ClusterError: a new local cluster is never started."""
    if address != "auto":
        return address
    env = os.environ.get("RAY_ADDRESS", "").strip()
    if env and env != "auto":
        return env
    recorded = _current_cluster_file()
    found = recorded.read_text(encoding="utf-8").strip() if recorded.is_file() else ""
    if not found:
        raise ClusterError("--ray auto found no running Ray cluster (RAY_ADDRESS is unset and `ray start --head` has "
                           "not started one on this machine)", "start one with `ray start --head`, or give --ray HOST:PORT")
    return found


def _current_cluster_file() -> Path:
    try:
        from ray._common.utils import get_ray_address_file  # noqa: PLC0415
    except ImportError:  # another Ray version: its default temp folder
        return Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    return Path(get_ray_address_file(None))


def probe(address: str, timeout_s: float) -> None:
    """A one-line ClusterError unless a Ray GCS answers at ``address`` and accepts this driver's token.

    ``ray.init`` would wait minutes on an address where nothing answers; this takes at most ``timeout_s`` for
    the TCP connection and Ray's own GCS connect timeout (RAY_py_gcs_connect_timeout_s) for the handshake.
    """
    match = ADDRESS.match(address)
    if not match:
        return
    host, port = match["host"], int(match["port"])
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        why = "nothing listens there" if isinstance(exc, ConnectionRefusedError) else \
            f"no answer within {timeout_s:g} s" if isinstance(exc, socket.timeout) else first_line(exc)
        raise ClusterError(f"cannot reach the Ray cluster at {address} ({why})",
                           "start it (`ray start --head --port=PORT` on the head) or check --ray HOST:PORT") from None
    try:
        from ray._raylet import GcsClient  # noqa: PLC0415
    except ImportError:
        return
    try:
        GcsClient(address=address)
    except Exception as exc:  # noqa: BLE001 - AuthenticationError, RpcError (timed out)
        if "auth" in type(exc).__name__.lower() or "Authentication" in str(exc):
            given = "refused the token set here" if _token_set() else "needs its auth token and none is set here"
            raise ClusterError(f"the Ray cluster at {address} {given}",
                               "set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the cluster's token: "
                               "`ray get-auth-token` on the head prints it") from None
        raise ClusterError(f"{address} answers but is not a Ray cluster's GCS port ({first_line(exc)})",
                           "give the port the head was started with (`ray start --head --port=PORT`)") from None


def _token_set() -> bool:
    return bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                or (Path.home() / ".ray" / "auth_token").is_file())


def stage_code(dest: Path) -> Path:
    """``dest``/edgecnn: what a node imports, the contract modules and edgecnn.devices, as one package folder.

    In a source checkout edgecnn.devices lives in devices/ beside edgecnn/ (pyproject's package-dir), so the
    package a node gets is assembled here rather than uploaded as the edgecnn folder.
    """
    import importlib.util  # noqa: PLC0415

    import edgecnn  # noqa: PLC0415

    core = Path(edgecnn.__file__).parent
    devices = Path(list(importlib.util.find_spec("edgecnn.devices").submodule_search_locations)[0])
    package = Path(dest) / "edgecnn"
    package.mkdir(parents=True, exist_ok=True)
    for source in sorted([*core.glob("*.py"), *core.glob("*.json")]):
        shutil.copy2(source, package / source.name)
    shutil.copytree(devices, package / "devices", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                    dirs_exist_ok=True)
    return package
