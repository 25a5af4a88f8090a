"""The cached arm64 Debian bookworm root (Raspberry Pi OS 64-bit's base: glibc 2.36, Python 3.11) and running
commands in it under QEMU user mode.

Built once with debootstrap into ``<cache>/arm64-root.building`` and renamed to ``<cache>/arm64-root`` when
complete, with a venv at /opt/edgecnn-venv; a recipe stamp decides when it must be rebuilt. Commands run
through enter.py in a private mount namespace (see there), with QEMU_CPU choosing the emulated CPU. A lock
file serialises users of one root (two sessions must not install into one venv at once).
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

from tools.arm64emu.host import InfraSkip, Log, last_line, run_tool
from tools.arm64emu.stages import Stages

RECIPE = {"recipe": 1, "suite": "bookworm", "arch": "arm64", "variant": "minbase",
          "include": ["python3", "python3-venv", "ca-certificates"], "venv": "/opt/edgecnn-venv"}
VENV = RECIPE["venv"]
GUEST_CA = "/etc/edgecnn-host-ca.crt"
GUEST_CONSTRAINTS = "/etc/edgecnn-pip-constraints.txt"
STAMP = "etc/edgecnn-root.json"
ENTER = Path(__file__).with_name("enter.py")
PIP_URL_KEYS = ("index-url", "extra-index-url", "find-links")
PIP_PLAIN_KEYS = ("trusted-host", "proxy", "timeout", "default-timeout", "retries", "no-index",
                  "disable-pip-version-check")
PROXY_VARS = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


@dataclass(frozen=True)
class Root:
    """A built arm64 root and the CPU model its commands are emulated as."""

    path: Path
    cpu: str
    pip_env: dict[str, str] = field(default_factory=dict)

    def env(self, extra: Optional[dict[str, str]] = None) -> dict[str, str]:
        return {"PATH": f"{VENV}/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
                "QEMU_CPU": self.cpu, **self.pip_env, **(extra or {})}

    def run(self, argv: list[str], log: Log, share: Optional[Path] = None, timeout: Optional[float] = None,
            env: Optional[dict[str, str]] = None, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
        """Run ``argv`` (paths inside the root) emulated; ``share`` is seen inside as /mnt/edgecnn (the cwd)."""
        host = ["unshare", "--mount", "--propagation", "private", "--", sys.executable, "-I", str(ENTER),
                str(self.path), str(share) if share else "-", "--", *argv]
        return run_tool(host, log, timeout=timeout, env=self.env(env), ok=ok)

    def python(self, args: list[str], log: Log, share: Optional[Path] = None,
               timeout: Optional[float] = None) -> subprocess.CompletedProcess:
        return self.run([f"{VENV}/bin/python", "-I", *args], log, share=share, timeout=timeout)


# -- the cache ----------------------------------------------------------------------------------------------
@contextmanager
def locked(cache: Path, log: Log, wait: bool = True) -> Iterator[None]:
    """Hold the root's lock for the whole session (build, installs, runs); InfraSkip when another session
    holds it and ``wait`` is False."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "arm64-root.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise InfraSkip("the arm64 root is in use by another session") from None
            log("waiting for another session using the arm64 root to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` in this process's mount namespace (from /proc/self/mountinfo)."""
    base = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo") as info:
        for line in info:
            point = line.split()[4].encode().decode("unicode_escape")  # octal escapes such as \040
            if point == base or point.startswith(base + "/"):
                found.append(point)
    return found


def remove_root(path: Path, log: Log) -> None:
    """Delete a root; first unmount anything still mounted below it, and refuse if that fails, since
    deleting through a bind mount would delete the host's files."""
    if not path.exists():
        return
    for point in sorted(mounts_under(path), key=len, reverse=True):
        subprocess.run(["umount", point], check=False, capture_output=True)
    left = mounts_under(path)
    if left:
        raise RuntimeError(f"refusing to delete {path}: still mounted below it: {', '.join(left)}")
    log(f"deleting {path}")
    shutil.rmtree(path)


def read_stamp(path: Path) -> dict:
    try:
        return json.loads((path / STAMP).read_text())
    except (OSError, ValueError):
        return {}


def ensure_root(cache: Path, mirror: str, cpu: str, log: Log, stages: Stages) -> Root:
    """The cached root, built first when missing or built by another recipe."""
    final = cache / "arm64-root"
    stamp = read_stamp(final)
    if {k: stamp.get(k) for k in RECIPE} == RECIPE:
        log(f"using the cached root {final} (built {stamp.get('built')})")
        root = Root(final, cpu)
        refresh_host_files(root.path)
        return root
    remove_root(final, log)
    building = cache / "arm64-root.building"
    remove_root(building, log)
    try:
        with stages("root: debootstrap (arm64 bookworm minbase + python3)"):
            # In a private mount namespace too: the /proc and /sys debootstrap mounts in the target die with it.
            run_tool(["unshare", "--mount", "--propagation", "private", "--", "debootstrap",
                      f"--arch={RECIPE['arch']}", f"--variant={RECIPE['variant']}",
                      "--include=" + ",".join(RECIPE["include"]), RECIPE["suite"], str(building), mirror],
                     log, timeout=3600)
    except subprocess.CalledProcessError as exc:
        remove_root(building, log)
        raise InfraSkip(f"debootstrap of arm64 bookworm from {mirror} failed: {last_line(exc)}") from None
    refresh_host_files(building)
    with stages("root: python3 -m venv"):
        Root(building, cpu).run(["/usr/bin/python3", "-m", "venv", VENV], log, timeout=1800)
    (building / STAMP).write_text(json.dumps({**RECIPE, "mirror": mirror, "built": time.strftime("%Y-%m-%d %H:%M")}))
    os.replace(building, final)
    return Root(final, cpu)


def refresh_host_files(root: Path) -> None:
    """DNS and the host's CA bundle (which may hold a proxy's CA) copied in, for pip in the root."""
    for source, target in (("/etc/resolv.conf", "etc/resolv.conf"), ("/etc/ssl/certs/ca-certificates.crt", GUEST_CA[1:])):
        if Path(source).is_file():
            (root / target).unlink(missing_ok=True)  # resolv.conf may be a dangling symlink in the root
            shutil.copyfile(source, root / target)


# -- pip inside the root ------------------------------------------------------------------------------------
def host_pip_config(log: Log) -> dict[str, str]:
    """The host pip's effective settings (config files and PIP_* variables), key -> value."""
    done = subprocess.run([sys.executable, "-m", "pip", "config", "list"], check=False, capture_output=True, text=True)
    ranked: dict[str, tuple[int, str]] = {}
    rank = {"global": 0, "install": 1, ":env:": 2}
    for line in done.stdout.splitlines():
        name, _, value = line.partition("=")
        section, _, key = name.rpartition(".")
        if section in rank and (key not in ranked or rank[section] >= ranked[key][0]):
            ranked[key] = (rank[section], value.strip().strip("'\""))
    return {key: value for key, (_, value) in ranked.items()}


def guest_pip_env(root: Path, settings: dict[str, str], log: Log) -> dict[str, str]:
    """PIP_* variables that give pip in the root the host's indexes, proxies and CA bundle.

    Local paths and file:// indexes are the host's own (x86 wheels, not visible in the root): left out, logged.
    """
    env = {"PIP_CERT": GUEST_CA, "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           **{name: os.environ[name] for name in PROXY_VARS if os.environ.get(name)}}
    for key in PIP_URL_KEYS:
        values = settings.get(key, "").split()
        kept = [v for v in values if v.startswith(("http://", "https://"))]
        if len(kept) < len(values):
            log(f"pip in the root: leaving out the host-local {key} {[v for v in values if v not in kept]}")
        if kept:
            env[f"PIP_{key.upper().replace('-', '_')}"] = " ".join(kept)
    for key in PIP_PLAIN_KEYS:
        if settings.get(key):
            env[f"PIP_{key.upper().replace('-', '_')}"] = settings[key]
    constraints = settings.get("constraint", "")
    if constraints and Path(constraints).is_file():
        shutil.copyfile(constraints, root / GUEST_CONSTRAINTS[1:])
        env["PIP_CONSTRAINT"] = GUEST_CONSTRAINTS
    return env


def index_url(env: dict[str, str]) -> str:
    return env.get("PIP_INDEX_URL", "https://pypi.org/simple").split()[0].rstrip("/")
