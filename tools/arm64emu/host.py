"""The x86 host's part of arm64 emulation: root privileges, QEMU user mode >= 8, binfmt_misc, the Debian mirror.

QEMU 7.2 (Debian bookworm's own qemu-user-static) shows the host's x86 /proc/cpuinfo to an arm64 guest and
``import onnxruntime`` (>= 1.28) then segfaults, so QEMU comes from bookworm-backports (10.0) when the host's
is older. binfmt_misc runs arm64 ELF files through QEMU; its registration needs the 'F' (fix-binary) flag so
the interpreter, opened once at registration, also works inside a chroot.

Anything that cannot be put right here raises InfraSkip with the reason: the check is then reported as
skipped, never as passed.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Optional

QEMU = "qemu-aarch64"
QEMU_MIN = (8, 0)
BINFMT = Path("/proc/sys/fs/binfmt_misc")
BINFMT_ENTRY = BINFMT / "qemu-aarch64"
BINFMT_CONF = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")
BACKPORTS_LIST = Path("/etc/apt/sources.list.d/edgecnn-bookworm-backports.sources")
# /proc/cpuinfo "CPU part" QEMU reports for each model: what the guest sees, checked before anything runs.
CPU_PARTS = {"cortex-a72": "0xd08", "cortex-a76": "0xd0b", "cortex-a53": "0xd03"}
CPU_BOARDS = {"cortex-a72": "Raspberry Pi 4", "cortex-a76": "Raspberry Pi 5", "cortex-a53": "Raspberry Pi 3 / Zero 2"}

Log = Callable[[str], None]


class InfraSkip(Exception):
    """The machine cannot host the arm64 check (no root, no binfmt_misc, mirror or package unreachable)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def run_tool(argv: list[str], log: Log, timeout: Optional[float] = None, env: Optional[dict[str, str]] = None,
             cwd: Optional[Path] = None, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
    """Run an external tool, its output kept in the log; CalledProcessError when its exit status is not in ``ok``."""
    log("$ " + " ".join(argv))
    done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    for stream in (done.stdout, done.stderr):
        if stream.strip():
            log(stream.rstrip())
    if done.returncode not in ok:
        raise subprocess.CalledProcessError(done.returncode, argv, done.stdout, done.stderr)
    return done


def last_line(error: subprocess.CalledProcessError) -> str:
    text = ((error.stderr or "") + "\n" + (error.stdout or "")).strip().splitlines()
    lines = [line for line in text if line.strip()]
    return lines[-1].strip() if lines else f"exit status {error.returncode}"


def require_root() -> None:
    if os.geteuid() != 0:
        raise InfraSkip("needs root (debootstrap, chroot, mount and binfmt_misc); run it as root, as CI does")
    for tool in ("unshare", "chroot", "mount"):
        if shutil.which(tool) is None:
            raise InfraSkip(f"'{tool}' is not installed (util-linux / coreutils)")


def os_release() -> dict[str, str]:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return {}
    return {k: v.strip('"') for k, _, v in (line.partition("=") for line in text.splitlines()) if k}


def qemu_version() -> Optional[tuple[int, int, int]]:
    """The installed qemu-aarch64's version, or None when it is not installed."""
    binary = shutil.which(QEMU)
    if binary is None:
        return None
    done = subprocess.run([binary, "--version"], check=False, capture_output=True, text=True)
    found = re.search(r"version (\d+)\.(\d+)\.(\d+)", done.stdout)
    return tuple(int(g) for g in found.groups()) if found else None  # type: ignore[return-value]


def debian_mirror() -> str:
    """The Debian archive this machine's apt sources name (deb822 .sources or one-line .list files)."""
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list")),
             *sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))]
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        for uri in _debian_uris(text):
            return uri
    raise InfraSkip("no Debian mirror found in /etc/apt/sources.list*; pass --mirror URL")


def _debian_uris(text: str) -> list[str]:
    uris = []
    for line in text.splitlines():  # one-line form: deb URI SUITE COMPONENTS
        parts = line.split("#", 1)[0].split()
        if len(parts) >= 3 and parts[0] == "deb" and not parts[1].startswith("["):
            uris.append((parts[1], parts[2]))
    for block in re.split(r"\n\s*\n", text):  # deb822 form
        fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", block, flags=re.M))
        if "deb" in fields.get("Types", "").split():
            uris += [(uri, suite) for uri in fields.get("URIs", "").split() for suite in fields.get("Suites", "").split()]
    return [uri.rstrip("/") for uri, suite in uris
            if suite in ("bookworm", "stable") and "security" not in uri and uri.startswith(("http://", "https://"))]


def check_reachable(url: str, what: str, timeout: float = 30) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - a fixed http(s) URL
            response.read(1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise InfraSkip(f"{what} is unreachable ({url}: {exc})") from None


def ensure_packages(mirror: str, log: Log) -> str:
    """QEMU user mode >= 8 (from bookworm-backports on bookworm) and debootstrap installed; QEMU's version."""
    version = qemu_version()
    apt = []
    if version is None or version < QEMU_MIN:
        apt.append(["-t", "bookworm-backports", "qemu-user-static"] if os_release().get("VERSION_CODENAME") == "bookworm"
                   else ["qemu-user-static"])
    if shutil.which("debootstrap") is None:
        apt.append(["debootstrap"])
    if apt and shutil.which("apt-get") is None:
        raise InfraSkip("qemu-aarch64 >= 8 and debootstrap are needed and there is no apt-get to install them")
    if apt and "bookworm-backports" in apt[0]:
        check_reachable(f"{mirror}/dists/bookworm-backports/InRelease", "the bookworm-backports archive")
        if not BACKPORTS_LIST.exists():
            BACKPORTS_LIST.write_text(f"Types: deb\nURIs: {mirror}\nSuites: bookworm-backports\nComponents: main\n"
                                      "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
            log(f"wrote {BACKPORTS_LIST} (backports have apt priority 100: nothing else is upgraded from them)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        if apt:
            run_tool(["apt-get", "update", "-qq"], log, timeout=600, env=env)
        for args in apt:
            run_tool(["apt-get", "install", "-y", "-qq", *args], log, timeout=900, env=env)
    except subprocess.CalledProcessError as exc:
        raise InfraSkip(f"apt-get could not install {' / '.join(a[-1] for a in apt)}: {last_line(exc)}") from None
    version = qemu_version()
    if version is None or version < QEMU_MIN:
        raise InfraSkip(f"qemu-aarch64 {version} is installed; >= {QEMU_MIN[0]} is needed (7.2 shows the x86 "
                        "/proc/cpuinfo to the guest and onnxruntime crashes); install it from bookworm-backports")
    return ".".join(map(str, version))


def binfmt_state() -> dict[str, str]:
    """The aarch64 binfmt_misc entry: {'enabled', 'interpreter', 'flags'}; empty when not registered."""
    try:
        lines = BINFMT_ENTRY.read_text().splitlines()
    except OSError:
        return {}
    state = {"enabled": lines[0].strip() if lines else ""}
    for line in lines[1:]:
        key, _, value = line.partition(" ")
        if key in ("interpreter", "flags:"):
            state[key.rstrip(":")] = value.strip()
    return state


def ensure_binfmt(log: Log, reregister: bool = False) -> dict[str, str]:
    """binfmt_misc mounted and aarch64 registered with the fix-binary flag; re-registered when asked, since
    with 'F' the kernel keeps the QEMU binary it opened at registration, even after an upgrade."""
    if not (BINFMT / "register").exists():
        try:
            run_tool(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], log)
        except subprocess.CalledProcessError as exc:
            raise InfraSkip(f"binfmt_misc cannot be mounted at {BINFMT}: {last_line(exc)}") from None
    state = binfmt_state()
    if state and (reregister or "F" not in state.get("flags", "") or state.get("enabled") != "enabled"):
        log(f"removing the aarch64 binfmt entry {state}")
        BINFMT_ENTRY.write_text("-1")
        state = {}
    if not state:
        if not BINFMT_CONF.exists():
            raise InfraSkip(f"{BINFMT_CONF} is missing: install qemu-user-binfmt (qemu-user-static)")
        rule = BINFMT_CONF.read_text().strip()
        if not rule.rstrip().split(":")[-1].count("F"):
            rule += "F"  # fix-binary: the interpreter must be usable inside the chroot
        try:
            (BINFMT / "register").write_text(rule)
        except OSError as exc:
            raise InfraSkip(f"cannot register aarch64 in binfmt_misc: {exc}") from None
        state = binfmt_state()
        log(f"registered aarch64 in binfmt_misc: {state}")
    if "F" not in state.get("flags", ""):
        raise InfraSkip(f"the aarch64 binfmt_misc entry lacks the fix-binary flag: {state}")
    return state
