"""The web viewer of `edgecnn run --serve`: loopback by default, its own three routes only (no path reaches
the filesystem), and many slow, stuck or disconnecting clients on loopback never stall inference.

One real `edgecnn run` (the converted default on a looping video of MNIST digits) serves all the tests."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from edgecnn.devices.serve import parse_bind

ROOT = Path(__file__).resolve().parents[2]
EDGECNN = str(Path(sys.executable).with_name("edgecnn"))


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from soak import make_video

    return make_video(tmp_path_factory.mktemp("video") / "digits.avi", frames=60)


@pytest.fixture(scope="module")
def viewer(artifacts, video):
    """(process, base URL) of `edgecnn run --serve 0` on the looping video; ended with Ctrl-C after the tests."""
    proc = subprocess.Popen([EDGECNN, "run", str(artifacts["tflite-int8"]), "--source", str(video), "--loop",
                             "--serve", "0", "--duration", "600", "--quiet", "--no-show", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "COLUMNS": "200"})
    url = None
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and url is None:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        match = re.search(r"web viewer at (http://\S+/)", line)
        url = match.group(1) if match else None
    if url is None:
        proc.kill()
        pytest.fail("edgecnn run --serve printed no URL: " + "".join(lines)[-2000:])
    drain = threading.Thread(target=lambda: [lines.append(x) for x in proc.stdout], daemon=True)
    drain.start()
    yield proc, url, lines
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    drain.join(timeout=10)
    assert proc.returncode in (0, 130), "".join(lines)[-2000:]
    assert re.search(r"ended by\W+interrupted", "".join(lines)), "".join(lines)[-2000:]  # Ctrl-C: summary printed
    assert "Traceback" not in "".join(lines), "".join(lines)[-6000:]


def get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def raw_request(url: str, data: bytes, timeout: float = 10.0) -> bytes:
    host, port = re.match(r"http://([^/:]+):(\d+)/", url).groups()
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def frame_counter(url: str) -> int:
    status, body = get(url + "status.json")
    assert status == 200
    frame = json.loads(body)["frame"]
    return int(frame or 0)


def test_bind_defaults_to_loopback():
    assert parse_bind("8080") == ("127.0.0.1", 8080)
    assert parse_bind(":9000") == ("127.0.0.1", 9000)
    assert parse_bind("0.0.0.0:8080") == ("0.0.0.0", 8080)


def test_the_running_viewer_listens_on_loopback_only(viewer):
    proc, url, _ = viewer
    assert url.startswith("http://127.0.0.1:")
    port = int(url.rsplit(":", 1)[1].strip("/"))
    listening = [c for c in psutil.Process(proc.pid).net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
    assert listening and all(c.laddr.ip == "127.0.0.1" for c in listening), listening
    others = [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
              if a.family == socket.AF_INET and not a.address.startswith("127.")]
    for address in others:
        with pytest.raises(OSError):
            socket.create_connection((address, port), timeout=2).close()


def test_its_own_routes_work(viewer):
    _, url, _ = viewer
    status, page = get(url)
    assert status == 200 and b"<html" in page.lower()
    status, body = get(url + "status.json")
    assert status == 200 and "top_k" in json.loads(body)


@pytest.mark.parametrize("path", [
    "/../../../../etc/passwd", "/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "//etc/passwd", "/etc/passwd",
    "/web/index.html", "/index.html", "/status.json/../../../etc/passwd", "/..%2f..%2f..%2fetc%2fpasswd",
    "/stream.mjpg/../../etc/passwd", "/favicon.ico", "/devices/serve.py", "/%00", "/.git/config",
])
def test_any_other_path_is_404_and_reads_no_file(viewer, path):
    _, url, _ = viewer
    response = raw_request(url, f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    assert response.startswith(b"HTTP/1.0 404"), response[:200]
    assert b"root:" not in response and b"[core]" not in response and b"import" not in response


@pytest.mark.parametrize("request_bytes,expected", [
    (b"GET http://evil.example/../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", b" 404"),
    (b"POST / HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello", b" 501"),
    (b"DELETE /status.json HTTP/1.0\r\n\r\n", b" 501"),
    (b"HEAD / HTTP/1.0\r\n\r\n", b" 405"),
    (b"GET /" + b"a" * 70000 + b" HTTP/1.0\r\n\r\n", b" 414"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(200) + b"\r\n\r\n", b" 400"),
])
def test_other_methods_and_malformed_requests_are_refused(viewer, request_bytes, expected):
    _, url, _ = viewer
    response = raw_request(url, request_bytes)
    assert expected in response.split(b"\r\n", 1)[0], response[:200]
    assert b"root:" not in response


def _slow_clients(url: str, stop: threading.Event, opened: list) -> list[threading.Thread]:
    host, port = re.match(r"http://([^/:]+):(\d+)/", url).groups()
    address = (host, int(port))

    def stuck_viewer():  # asks for the stream, then never reads: its socket buffer fills
        sock = socket.create_connection(address, timeout=5)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")
        opened.append(sock)
        stop.wait()

    def slowloris():  # sends a request one byte at a time and never finishes it
        sock = socket.create_connection(address, timeout=5)
        opened.append(sock)
        for byte in b"GET /status.json HTTP/1.1\r\nHost: x\r\nX-a: b":
            if stop.wait(0.2):
                break
            try:
                sock.send(bytes([byte]))
            except OSError:
                return

    def churn():  # connects, starts the stream, disconnects, again and again
        while not stop.is_set():
            try:
                sock = socket.create_connection(address, timeout=5)
                sock.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")
                sock.recv(100)
                sock.close()
            except OSError:
                pass
            stop.wait(0.02)

    threads = [threading.Thread(target=fn, daemon=True) for fn in [stuck_viewer] * 12 + [slowloris] * 10 + [churn] * 3]
    for thread in threads:
        thread.start()
    return threads


def test_slow_stuck_and_disconnecting_clients_do_not_stall_inference(viewer):
    _, url, _ = viewer
    before = frame_counter(url)
    time.sleep(1.0)
    assert frame_counter(url) > before, "the run is not advancing before the clients arrive"
    stop, opened = threading.Event(), []
    threads = _slow_clients(url, stop, opened)
    try:
        progress = []
        for _ in range(6):  # six 2-second windows under attack: inference must advance in every one
            start = frame_counter(url)
            time.sleep(2.0)
            progress.append(frame_counter(url) - start)
        status, _ = get(url + "status.json", timeout=5)
        assert status == 200
    finally:
        stop.set()
        for sock in opened:
            try:
                sock.close()
            except OSError:
                pass
        for thread in threads:
            thread.join(timeout=10)
    assert all(p > 0 for p in progress), f"frames per 2 s window under attack: {progress}"
    time.sleep(1.0)
    after = frame_counter(url)
    time.sleep(1.0)
    assert frame_counter(url) > after
    status, page = get(url)  # still serving normally once the clients are gone
    assert status == 200 and b"<html" in page.lower()
