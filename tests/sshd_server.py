"""A real OpenSSH server (Debian's openssh-server, /usr/sbin/sshd) on 127.0.0.1 for the fleet tests and benchmark.

    with SshServer(folder) as server:      # folder: a temp dir (absolute paths only)
        server.config                      # an ssh config with aliases "board-a" and "board-b" for this server
        server.closed_port                 # a port nothing listens on

Host key, authorized key and client key are made for the server (ed25519, ssh-keygen); sshd runs in the
foreground (``-D -e``) with ``PasswordAuthentication no``, ``StrictModes no`` and a PidFile in ``folder``; the
client side is pinned to that host key through its own known_hosts file (no host-key checking is switched off).
Stopped by its PID.
"""
from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
ALIASES = ("board-a", "board-b")


def available() -> bool:
    return Path(SSHD).is_file() and shutil.which("ssh") is not None and shutil.which("ssh-keygen") is not None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SshServer:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder).absolute()
        self.user = getpass.getuser()
        self.port = 0
        self.closed_port = 0
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "SshServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def config(self) -> Path:
        return self.folder / "ssh_config"

    def start(self) -> None:
        f = self.folder
        f.mkdir(parents=True, exist_ok=True)
        for name in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(f / name)], check=True,
                           capture_output=True)
        shutil.copy(f / "client_key.pub", f / "authorized_keys")
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
        for _ in range(5):  # a free port can be taken between the probe and sshd's bind
            self.port, self.closed_port = free_port(), free_port()
            self._write_configs()
            self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(f / "sshd_config")],
                                            stdout=open(f / "sshd.log", "ab"), stderr=subprocess.STDOUT)
            if self._wait_listening():
                return
            self.stop()
        raise RuntimeError(f"sshd did not start: {(f / 'sshd.log').read_text()[-2000:]}")

    def _write_configs(self) -> None:
        f = self.folder
        (f / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {f / 'host_key'}\n"
            f"AuthorizedKeysFile {f / 'authorized_keys'}\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nStrictModes no\nUsePAM no\n"
            "PermitRootLogin prohibit-password\nUseDNS no\nMaxStartups 50\nMaxSessions 50\n"
            f"PidFile {f / 'sshd.pid'}\nSubsystem sftp /usr/lib/openssh/sftp-server\n")
        (f / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {(f / 'host_key.pub').read_text()}")
        aliases = "".join(
            f"Host {alias}\n  HostName 127.0.0.1\n  Port {self.port}\n  User {self.user}\n"
            f"  IdentityFile {f / 'client_key'}\n  IdentitiesOnly yes\n  UserKnownHostsFile {f / 'known_hosts'}\n"
            "  StrictHostKeyChecking yes\n" for alias in ALIASES)
        # Every other host (user@127.0.0.1, ssh://...) gets the same key and known_hosts.
        (f / "ssh_config").write_text(aliases + f"Host *\n  IdentityFile {f / 'client_key'}\n  IdentitiesOnly yes\n"
                                      f"  UserKnownHostsFile {f / 'known_hosts'}\n  StrictHostKeyChecking yes\n")

    def _wait_listening(self, timeout_s: float = 10.0) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.process.poll() is not None:
                return False
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        pid_file = self.folder / "sshd.pid"
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # -D: the PidFile names this same process
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        pid_file.unlink(missing_ok=True)
