"""`edgecnn bench --host` and `edgecnn deploy` against a real OpenSSH server on 127.0.0.1 (tests/sshd_server.py).

The "board" is the project's wheel installed with only the device extras in its own venv (tests/device_env.py, no
TensorFlow), reached through `--remote-edgecnn`: a launcher at a path with a space that gives the board its own
cache folder (also with a space). The artifacts sit in a local folder with a space in its name. Nothing here is a
double: ssh, scp, sshd, the board's edgecnn, LiteRT and ONNX Runtime all run.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import sshd_server
from device_env import device_venv
from edgecnn.cli import main

pytestmark = pytest.mark.skipif(not sshd_server.available(),
                                reason="needs OpenSSH (ssh and /usr/sbin/sshd; dev.sh test installs them as root)")
ARTIFACTS = ("tflite-int8", "onnx-int8")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with sshd_server.SshServer(tmp_path_factory.mktemp("sshd")) as running:
        yield running


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """The board's edgecnn: a launcher at '<tmp>/board home/bin/edgecnn' running the device venv's edgecnn with
    EDGECNN_CACHE='<tmp>/board home/cache'."""
    venv_bin = _board_venv()
    home = tmp_path_factory.mktemp("board") / "board home"
    (home / "bin").mkdir(parents=True)
    launcher = home / "bin" / "edgecnn"
    launcher.write_text(f"#!/bin/sh\nEDGECNN_CACHE='{home / 'cache'}' exec '{venv_bin / 'edgecnn'}' \"$@\"\n")
    launcher.chmod(0o755)
    return {"edgecnn": str(launcher), "cache": home / "cache", "venv_bin": venv_bin}


def _board_venv() -> Path:
    """The device venv, checked to start: another checkout sharing the venv cache may prune a venv while it is
    built (its prune decided before the build took the lock), so one that vanished is built again."""
    for _ in range(3):
        python = device_venv(("device", "onnx-cpu"))
        time.sleep(1.0)
        if python.exists() and subprocess.run([str(python), "-c", "import edgecnn"]).returncode == 0:
            return python.parent
    raise RuntimeError("the device venv vanished three times while it was built")


@pytest.fixture(scope="module")
def models(mnist_convert, tmp_path_factory):
    """The int8 TFLite and ONNX artifacts with their manifest in 'my models/', and 200 labelled digits (.npz)."""
    from edgecnn.data import mnist_sample

    folder = tmp_path_factory.mktemp("local") / "my models"
    folder.mkdir()
    paths = []
    for name in ARTIFACTS:
        paths.append(folder / mnist_convert.artifact_path(name).name)
        shutil.copy2(mnist_convert.artifact_path(name), paths[-1])
    shutil.copy2(mnist_convert.out_dir / "manifest.json", folder / "manifest.json")
    digits = mnist_sample("val")
    data = folder.parent / "digits 200.npz"
    np.savez(data, x=digits.images[:200], y=digits.labels[:200])
    return {"paths": paths, "data": data}


def _fleet(server, board, models, tmp_path, *hosts, extra=()):
    out = tmp_path / "fleet"
    args = ["bench", *map(str, models["paths"]), "--device", "cpu,onnx-cpu", "--runs", "30", "--warmup", "10",
            "--data", str(models["data"]), "--ssh-config", str(server.config), "--remote-edgecnn", board["edgecnn"],
            "--out", str(out), "--force", *extra]
    for host in hosts:
        args += ["--host", host]
    code = main(args)
    return code, json.loads((out / "bench.json").read_text())


def test_two_artifacts_on_one_host_under_two_aliases_at_once(server, board, models, tmp_path, capsys):
    from edgecnn.bench.result import validate_result
    from edgecnn.fileio import sha256_of

    before = set(Path("/tmp").glob("edgecnn-fleet.*"))
    code, raw = _fleet(server, board, models, tmp_path, "board-a", "board-b")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    validate_result(raw)
    assert {(r["host"], r["source"], r["format"], r["target"], r["status"]) for r in raw["rows"]} == {
        (h, h, f, t, "ok") for h in ("board-a", "board-b") for f, t in (("tflite-int8", "cpu"), ("onnx-int8", "onnx-cpu"))}
    for row in raw["rows"]:  # measured on the board: its deployed copy, with accuracy on the copied digits
        assert row["artifact"].startswith(str(board["cache"] / "artifacts")), row["artifact"]
        assert row["accuracy"]["samples"] == 200 and row["accuracy"]["top1"] > 0.9
        assert row["invoke"]["count"] == 30
    for host in ("board-a", "board-b"):  # each row's host has its fingerprint and the board's edgecnn version
        env = raw["environments"][host]
        assert env["cpu_model"] and "tensorflow" not in env["versions"] and "ai-edge-litert" in env["versions"]
        assert raw["hosts"][host]["status"] == "ok" and raw["hosts"][host]["edgecnn"] == env["versions"]["edgecnn"]
    for path in models["paths"]:  # content-addressed: <sha256>/<name> beside its manifest, same bytes
        digest = sha256_of(path)
        assert sha256_of(board["cache"] / "artifacts" / digest / path.name) == digest
        assert (board["cache"] / "artifacts" / digest / "manifest.json").is_file()
    progress = [ln for ln in captured.err.splitlines() if "done: 2 row(s)" in ln]  # one line per host
    assert len(progress) == 2 and {ln.split()[0] for ln in progress} == {"board-a", "board-b"}, captured.err
    assert set(Path("/tmp").glob("edgecnn-fleet.*")) <= before  # the remote temp folders are gone
    markdown = (tmp_path / "fleet" / "bench.md").read_text()
    assert "- board-a: edgecnn " in markdown and "| board-b | mnist_cnn | onnx-int8 |" in markdown
    # edgecnn report merges the fleet's file with a local bench: every board's fingerprint and host kept
    assert main(["bench", str(models["paths"][0]), "--runs", "10", "--no-step", "--out", str(tmp_path / "here")]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "fleet" / "bench.json"), str(tmp_path / "here" / "bench.json"),
                 "--out", str(tmp_path / "report"), "--json"]) == 0
    merged = json.loads(capsys.readouterr().out)
    validate_result(merged)
    assert len(merged["rows"]) == 5 and {"board-a", "board-b"} <= set(merged["environments"])
    assert [r.get("host") for r in merged["rows"]][:4] == [r["host"] for r in raw["rows"]]
    assert merged["hosts"] == raw["hosts"] and len(merged["environments"]) == 3


def test_deployed_artifacts_are_not_copied_again(server, board, models, tmp_path, capsys):
    assert main(["deploy", *map(str, models["paths"]), "--host", "board-a", "--ssh-config", str(server.config),
                 "--remote-edgecnn", board["edgecnn"]]) == 0
    remote = capsys.readouterr().out.split("\n")[:2]
    assert [Path(p).name for p in remote] == [p.name for p in models["paths"]]
    stamps = {p: Path(p).stat().st_mtime_ns for p in remote}
    time.sleep(0.05)
    assert main(["deploy", *map(str, models["paths"]), "--host", "board-b", "--ssh-config", str(server.config),
                 "--remote-edgecnn", board["edgecnn"]]) == 0
    assert capsys.readouterr().out.split("\n")[:2] == remote
    code, raw = _fleet(server, board, models, tmp_path, "board-a")
    assert code == 0
    assert raw["hosts"]["board-a"]["copied"] == 0 and raw["hosts"]["board-a"]["already_there"] == 4
    assert {p: Path(p).stat().st_mtime_ns for p in remote} == stamps  # not rewritten either


def test_a_changed_copy_on_the_board_is_replaced(server, board, models, tmp_path, capsys):
    """A file in the content-addressed folder whose bytes differ (a truncated copy) is copied again."""
    from edgecnn.fileio import sha256_of

    assert main(["deploy", str(models["paths"][0]), "--host", "board-a", "--ssh-config", str(server.config),
                 "--remote-edgecnn", board["edgecnn"]]) == 0
    remote = Path(capsys.readouterr().out.strip())
    remote.write_bytes(remote.read_bytes()[:1000])
    assert main(["deploy", str(models["paths"][0]), "--host", "board-a", "--ssh-config", str(server.config),
                 "--remote-edgecnn", board["edgecnn"]]) == 0
    assert sha256_of(remote) == sha256_of(models["paths"][0])


def test_odd_file_names_arrive_unchanged(server, board, models, tmp_path, capsys):
    """Quotes, spaces, $ and a leading dash in a file name: quoted on the remote shell's side."""
    from edgecnn.fileio import sha256_of

    names = ["it's a $HOME model.tflite", "-dash `x`.tflite"]
    for name in names:
        shutil.copy2(models["paths"][0], tmp_path / name)
    args = ["deploy", *(str(tmp_path / n) for n in names), "--host", "ssh://{}@127.0.0.1:{}".format(server.user,
            server.port), "--ssh-config", str(server.config), "--remote-edgecnn", board["edgecnn"]]
    assert main(args) == 0, capsys.readouterr().err
    remote = capsys.readouterr().out.split("\n")[:2]
    assert [Path(p).name for p in remote] == names
    assert all(sha256_of(Path(p)) == sha256_of(models["paths"][0]) for p in remote)


def test_a_closed_port_fails_its_rows_and_the_other_host_is_measured(server, board, models, tmp_path, capsys):
    closed = f"ssh://{server.user}@127.0.0.1:{server.closed_port}"
    code, raw = _fleet(server, board, models, tmp_path, "board-a", closed)
    err = capsys.readouterr().err
    assert code == 1
    by_host = {h: [r for r in raw["rows"] if r["host"] == h] for h in ("board-a", closed)}
    assert len(by_host["board-a"]) == len(by_host[closed]) == 2
    assert all(r["status"] == "ok" for r in by_host["board-a"])
    assert all(r["status"] == "failed" and "Connection refused" in r["reason"] for r in by_host[closed])
    assert raw["hosts"][closed]["status"] == "failed" and closed not in raw["environments"]
    failed_lines = [ln for ln in err.splitlines() if ln.startswith("failed")]
    assert len(failed_lines) == 1 and "Connection refused" in failed_lines[0] and closed in failed_lines[0]


@pytest.mark.parametrize("case", ["unknown alias", "closed port", "missing remote edgecnn", "no edgecnn on PATH",
                                  "wrong key"])
def test_bad_hosts_give_one_clear_line(case, server, board, models, tmp_path, capsys):
    """`edgecnn deploy`: one `error:` line naming the host and the cause, exit 2; `bench --host`: the same reason
    in its failed rows and one `failed` line."""
    host, edgecnn, config, expected = "board-a", board["edgecnn"], server.config, ""
    if case == "unknown alias":
        host, expected = "no-such-board", "Could not resolve hostname no-such-board"
    elif case == "closed port":
        host, expected = f"ssh://127.0.0.1:{server.closed_port}", "Connection refused"
    elif case == "missing remote edgecnn":
        edgecnn, expected = str(tmp_path / "no venv" / "bin" / "edgecnn"), "is not on the board"
    elif case == "no edgecnn on PATH":
        if _login_shell_finds_edgecnn(server):
            pytest.skip("this machine's login shell finds an edgecnn (on PATH or python3 -m edgecnn)")
        edgecnn, expected = None, "no edgecnn on the board"
    else:
        config = tmp_path / "config"
        other = tmp_path / "other_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
        config.write_text(server.config.read_text().replace(str(server.folder / "client_key"), str(other)))
        expected = "Permission denied"
    remote = ["--remote-edgecnn", edgecnn] if edgecnn else []
    code = main(["deploy", str(models["paths"][0]), "--host", host, "--ssh-config", str(config), *remote])
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), captured.err
    assert expected in lines[0] and host in lines[0] and "Traceback" not in captured.err
    out = tmp_path / "fleet"
    code = main(["bench", str(models["paths"][0]), "--runs", "10", "--host", host, "--ssh-config", str(config),
                 *remote, "--out", str(out)])
    captured = capsys.readouterr()
    raw = json.loads((out / "bench.json").read_text())
    assert code == 1 and [r["status"] for r in raw["rows"]] == ["failed"]
    assert expected in raw["rows"][0]["reason"]
    failed = [ln for ln in captured.err.splitlines() if ln.startswith("failed")]
    assert len(failed) == 1 and expected in failed[0], captured.err


def _login_shell_finds_edgecnn(server) -> bool:
    probe = "command -v edgecnn || python3 -c 'import edgecnn'"
    return subprocess.run(["ssh", "-F", str(server.config), "-o", "BatchMode=yes", "board-a", probe],
                          capture_output=True).returncode == 0


def test_the_boards_version_and_schemas_are_checked(board, models):
    """What the board's edgecnn reports (the real remote-info) passes; another version, result schema or a
    manifest schema it cannot read is a failed host naming both sides."""
    import dataclasses

    from edgecnn import __version__
    from edgecnn.bench.fleet import check_board, check_manifests
    from edgecnn.bench.jobs import collect_artifacts
    from edgecnn.bench.remote import RemoteHostError

    info = json.loads(subprocess.run([board["edgecnn"], "remote-info"], check=True, capture_output=True,
                                     text=True).stdout)
    assert info["edgecnn"] == __version__ and info["artifacts_dir"] == str(board["cache"] / "artifacts")
    check_board(info, "pi5")
    with pytest.raises(RemoteHostError, match=f"pi5: the board runs edgecnn 0.0.9, this workstation {__version__}"):
        check_board({**info, "edgecnn": "0.0.9"}, "pi5")
    with pytest.raises(RemoteHostError, match="result schema 99"):
        check_board({**info, "result_schema": 99}, "pi5")
    artifacts = collect_artifacts(models["paths"])
    check_manifests(info, artifacts, "pi5")
    newer = [dataclasses.replace(a, manifest=dataclasses.replace(a.manifest, schema_version=99)) for a in artifacts]
    readable = re.escape(str(info["manifest_readable"]))
    with pytest.raises(RemoteHostError, match=f"pi5: the board's edgecnn reads manifest schema {readable}, .* is 99"):
        check_manifests(info, newer, "pi5")


@pytest.mark.parametrize("spec, destination, port", [
    ("pi5", "pi5", None), ("pi@192.168.1.20", "pi@192.168.1.20", None), ("ssh://pi@pi4.local:2222", "pi@pi4.local", 2222),
    ("ssh://jetson", "jetson", None), ("ssh://me@[::1]:22", "me@::1", 22)])
def test_host_forms(spec, destination, port):
    from edgecnn.bench.remote import parse_host

    host = parse_host(spec)
    assert (host.destination, host.port) == (destination, port)
    argv = host.ssh_argv("true")
    assert argv[argv.index("--") + 1] == destination and "BatchMode=yes" in argv


@pytest.mark.parametrize("spec", ["", "-oProxyCommand=touch x", "pi 5", "http://pi5", "ssh://pi5:99999", "ssh://pi5/x"])
def test_bad_host_forms(spec):
    from edgecnn.bench.remote import parse_host
    from edgecnn.errors import UsageError

    with pytest.raises(UsageError, match="--host"):
        parse_host(spec)


def test_ctrl_c_stops_the_remote_runs(server, board, models, tmp_path):
    """SIGINT to the workstation's process group during two long remote runs: exit 130 within seconds, no bench
    process left on the board, no remote temp folder left."""
    pattern = f"^{board['venv_bin']}/python.* bench {board['cache']}"
    command = [str(Path(sys.executable).parent / "edgecnn"), "bench", str(models["paths"][0]), "--duration", "120",
               "--host", "board-a", "--host", "board-b", "--ssh-config", str(server.config), "--remote-edgecnn",
               board["edgecnn"], "--out", str(tmp_path / "out")]
    before = set(Path("/tmp").glob("edgecnn-fleet.*"))
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,  # its own group, to send the terminal's SIGINT to
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while len(_pids(pattern)) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.3)
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert _pids(pattern) == []  # the fleet waited for the remote stop before exiting
    assert set(Path("/tmp").glob("edgecnn-fleet.*")) <= before


def _pids(pattern: str) -> list[str]:
    return subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
