"""Enter the arm64 root: run by ``unshare --mount --propagation private``, it mounts /proc, /sys, /dev/shm and
the shared folder inside the root, chroots and execs the command.

The mounts live in the private mount namespace and vanish with it when the command ends, however it ends
(even kill -9): nothing is left mounted under the root on the host, so deleting the root can never reach
through a mount into the host's /proc, /sys or /dev. /dev itself is not mounted: debootstrap made its
device nodes (null, zero, random, urandom, tty...) in the root.

    unshare --mount --propagation private -- python3 -I enter.py ROOT SHARE|- -- COMMAND...

Standard library only: it runs under the host's Python before anything of the project is importable.
"""
from __future__ import annotations

import os
import subprocess
import sys

GUEST_SHARE = "/mnt/edgecnn"


def mounts(root: str, share: str) -> list[list[str]]:
    plan = [["mount", "-t", "proc", "-o", "nosuid,nodev,noexec", "proc", f"{root}/proc"],
            ["mount", "-t", "sysfs", "-o", "ro,nosuid,nodev,noexec", "sysfs", f"{root}/sys"],
            ["mount", "-t", "tmpfs", "-o", "nosuid,nodev,mode=1777,size=512m", "tmpfs", f"{root}/dev/shm"]]
    if share != "-":
        plan.append(["mount", "--bind", share, f"{root}{GUEST_SHARE}"])
    return plan


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        print("usage: enter.py ROOT SHARE|- -- COMMAND...", file=sys.stderr)
        return 2
    root, share, command = os.path.realpath(argv[0]), argv[1], argv[3:]
    # Refuse to mount anything in the host's namespace: these mounts must die with this process.
    # (unshare execs this script, so the parent is the caller, still in the host's namespace.)
    if os.readlink("/proc/self/ns/mnt") == os.readlink(f"/proc/{os.getppid()}/ns/mnt"):
        print("enter.py: not in a private mount namespace (run it through unshare --mount)", file=sys.stderr)
        return 70
    if share != "-":
        os.makedirs(f"{root}{GUEST_SHARE}", exist_ok=True)
    for step in mounts(root, share):
        done = subprocess.run(step, check=False, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"enter.py: {' '.join(step)} failed: {done.stderr.strip()}", file=sys.stderr)
            return 70
    os.chroot(root)
    os.chdir(GUEST_SHARE if share != "-" else "/")
    os.execvpe(command[0], command, dict(os.environ))  # PATH searched inside the root
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
