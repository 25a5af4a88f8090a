"""The SSH transport of `edgecnn bench --host` and `edgecnn deploy`: the system OpenSSH client, nothing else.

Every call is ``subprocess`` with an argument list (``ssh``/``scp`` with ``-o BatchMode=yes`` and a connect
timeout), so the user's ssh config, keys, agent, ``ProxyJump`` and known_hosts apply as they set them. ssh hands
the remote command to the remote login shell as one string: every remote script here runs under ``sh -c`` with its
arguments quoted by ``shlex.quote``, so paths with spaces or shell characters arrive unchanged.

Each ssh/scp child runs in its own session (``start_new_session``): a Ctrl-C reaches only this process, which then
stops the remote work itself (fleet.py) instead of leaving a board running a bench nobody reads.

Also here: ``board_info``, what the board's edgecnn reports about itself (hidden command ``remote-info``), read
by the workstation before it deploys anything.
"""
from __future__ import annotations

import re
import shlex
import subprocess
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from edgecnn.errors import EdgecnnError, UsageError

DEFAULT_CONNECT_TIMEOUT_S = 10
POLL_S = 0.2
# A staging path scp writes to: nothing in it that the legacy scp protocol's remote shell would interpret.
SAFE_REMOTE_PATH = re.compile(r"^/[A-Za-z0-9._/-]+$")


class RemoteHostError(EdgecnnError):
    """A board that cannot be used: unreachable, authentication refused, no or another edgecnn, a failed copy."""


class Stopped(Exception):
    """The fleet run was interrupted (Ctrl-C) while this host's ssh call ran; the call was ended."""


@dataclass(frozen=True)
class SshHost:
    """One board as OpenSSH reaches it. ``spec``: what the user wrote (an ssh config alias, ``user@host``,
    ``ssh://user@host:port``); ``destination``/``port``: what ssh and scp get."""

    spec: str
    destination: str
    port: Optional[int] = None
    ssh_config: Optional[Path] = None
    connect_timeout_s: int = DEFAULT_CONNECT_TIMEOUT_S

    def options(self) -> list[str]:
        config = ["-F", str(self.ssh_config)] if self.ssh_config else []
        return [*config, "-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout_s}",
                "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]

    def ssh_argv(self, remote_command: str) -> list[str]:
        port = ["-p", str(self.port)] if self.port else []
        return ["ssh", *self.options(), *port, "--", self.destination, remote_command]

    def scp_argv(self, sources: Sequence[Path], remote_dir: str, recursive: bool = False) -> list[str]:
        port = ["-P", str(self.port)] if self.port else []
        user, _, host = self.destination.rpartition("@")
        host = f"[{host}]" if ":" in host else host  # an IPv6 address
        target = f"{user + '@' if user else ''}{host}:{remote_dir}"
        return ["scp", "-q", *(["-r"] if recursive else []), *self.options(), *port, "--",
                *(str(s) for s in sources), target]


def parse_host(spec: str, ssh_config: Optional[Path] = None,
               connect_timeout_s: int = DEFAULT_CONNECT_TIMEOUT_S) -> SshHost:
    """``alias`` | ``user@host`` | ``ssh://[user@]host[:port]`` -> SshHost. Raises UsageError for what ssh would
    read as an option or cannot parse, and for a --ssh-config file that does not exist."""
    text = (spec or "").strip()
    hint = "give an ssh config alias, user@host or ssh://user@host:port"
    if not text or text.startswith("-") or any(c.isspace() for c in text):
        raise UsageError(f"--host '{spec}' is not a host", hint)
    if ssh_config is not None and not Path(ssh_config).is_file():
        raise UsageError(f"--ssh-config {ssh_config} does not exist", "give your ssh config file, e.g. ~/.ssh/config")
    if connect_timeout_s < 1:
        raise UsageError(f"--connect-timeout {connect_timeout_s} is not positive")
    port = None
    destination = text
    if "://" in text:
        url = urllib.parse.urlsplit(text)
        try:
            port = url.port
        except ValueError:
            raise UsageError(f"--host '{spec}' has a bad port", hint) from None
        if url.scheme != "ssh" or not url.hostname or url.path not in ("", "/") or url.query:
            raise UsageError(f"--host '{spec}' is not an ssh:// address", hint)
        destination = f"{urllib.parse.unquote(url.username)}@{url.hostname}" if url.username else url.hostname
    return SshHost(text, destination, port, Path(ssh_config) if ssh_config else None, connect_timeout_s)


def run_script(host: SshHost, script: str, args: Sequence[str] = (), stop: Optional[threading.Event] = None,
               timeout_s: Optional[float] = None, on_stop: Optional[Any] = None) -> subprocess.CompletedProcess:
    """Run a POSIX sh ``script`` with ``args`` ($1...) on ``host``; returns the completed ssh (text output).

    Raises RemoteHostError when ssh itself fails (exit 255: unreachable, refused, unknown host, host key), Stopped
    when ``stop`` is set meanwhile (the local ssh is ended; ``on_stop`` is then called to stop the remote side)."""
    command = " ".join(shlex.quote(a) for a in ("sh", "-c", script, "sh", *args))
    return _call(host, host.ssh_argv(command), stop, timeout_s, on_stop)


def copy_to(host: SshHost, sources: Sequence[Path], remote_dir: str, recursive: bool = False,
            stop: Optional[threading.Event] = None) -> None:
    """scp ``sources`` into ``remote_dir`` (an absolute path of safe characters, see SAFE_REMOTE_PATH)."""
    if not SAFE_REMOTE_PATH.match(remote_dir):
        raise RemoteHostError(f"{host.spec}: remote staging folder {remote_dir!r} has characters scp may misread",
                              "set TMPDIR on the board to a plain path")
    done = _call(host, host.scp_argv(sources, remote_dir, recursive), stop, None, None)
    if done.returncode != 0:
        raise RemoteHostError(f"{host.spec}: copying to the board failed ({last_line(done.stderr) or 'scp failed'})")


def _call(host: SshHost, argv: list[str], stop: Optional[threading.Event], timeout_s: Optional[float],
          on_stop: Optional[Any]) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, errors="replace", start_new_session=True)
    except FileNotFoundError:
        raise RemoteHostError(f"the OpenSSH client ({argv[0]}) is not installed",
                              "install it, e.g. apt-get install openssh-client") from None
    waited = 0.0
    while True:
        try:
            out, err = proc.communicate(timeout=POLL_S)
            break
        except subprocess.TimeoutExpired:
            waited += POLL_S
            if (stop is not None and stop.is_set()) or (timeout_s is not None and waited > timeout_s):
                proc.kill()
                proc.communicate()
                if on_stop is not None:
                    on_stop()
                if stop is not None and stop.is_set():
                    raise Stopped() from None
                raise RemoteHostError(f"{host.spec}: no answer within {timeout_s:.0f} s") from None
    if proc.returncode == 255:  # ssh's own failure; a remote command never gets this far
        raise RemoteHostError(f"cannot reach {host.spec}: {connection_reason(err)}", _hint(err, host.spec))
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def connection_reason(stderr: str) -> str:
    """ssh's own last word, e.g. 'ssh: connect to host 127.0.0.1 port 1: Connection refused'."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.startswith("Warning: Permanently")]
    return lines[-1] if lines else "ssh failed without a message"


def _hint(stderr: str, spec: str) -> str:
    if "Could not resolve hostname" in stderr:
        return "is it an alias in your ssh config (--ssh-config FILE)?"
    if "Permission denied" in stderr:
        return "add your key to the board (ssh-copy-id) or to your ssh agent; passwords are not asked for"
    if "Host key verification failed" in stderr or "REMOTE HOST IDENTIFICATION" in stderr:
        return "ssh into the board once to check and accept its host key"
    return f"check that `ssh {spec} true` works"


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1][:400] if lines else ""


# -- the board's side -----------------------------------------------------------------------------------
def board_info(checks: Sequence[str] = ()) -> dict[str, Any]:
    """What this edgecnn is and holds, as JSON for the workstation: its version, the manifest schema versions it
    reads, the result schema it writes, its artifact folder, and which of ``checks`` ("<folder>/<file name>=<sha256>",
    relative to that folder) are there with that content. Cheap: no runtime is imported."""
    from edgecnn import __version__  # noqa: PLC0415
    from edgecnn.bench.result import RESULT_SCHEMA_VERSION  # noqa: PLC0415
    from edgecnn.fileio import cache_dir, sha256_of  # noqa: PLC0415
    from edgecnn.manifest import READABLE_SCHEMA_VERSIONS, SCHEMA_VERSION  # noqa: PLC0415

    folder = (cache_dir() / "artifacts").absolute()
    present = []
    for item in checks:
        relative, _, digest = item.rpartition("=")
        path = folder / relative
        if ".." not in Path(relative).parts and path.is_file() and sha256_of(path) == digest:
            present.append(item)
    return {"edgecnn": __version__, "manifest_schema": SCHEMA_VERSION,
            "manifest_readable": list(READABLE_SCHEMA_VERSIONS), "result_schema": RESULT_SCHEMA_VERSION,
            "artifacts_dir": str(folder), "present": present}
