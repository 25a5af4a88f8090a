"""The web viewer: its three routes only, MJPEG that decodes, misbehaving clients that never stall
inference, and the page in a real headless Chromium."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.request

import cv2
import numpy as np
import pytest

from edgecnn.devices.annotate import annotate
from edgecnn.devices.live import Display, RunOptions, run
from edgecnn.devices.serve import BOUNDARY, MAX_STREAM_CLIENTS, ViewerServer, parse_bind
from fixtures.video import digit_frames, write_video
from edgecnn.errors import UsageError

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def status(i: int) -> dict:
    return {"frame": i, "top_k": [{"index": 7, "label": "seven", "score": 0.93}], "dropped": 0,
            "stats": {"fps": 25.0, "ms": {"inference": {"p50": 1.0, "p90": 2.0}}}}


class Publisher:
    """Plays the live loop's part: publishes annotated frames as fast as it can, and counts them."""

    def __init__(self, viewer: ViewerServer, frames: int = 10**9, size=(240, 320)):
        self.viewer, self.limit, self.published = viewer, frames, 0
        rng = np.random.default_rng(0)
        self.frame = rng.integers(0, 256, (*size, 3), dtype=np.uint8)  # noise: large JPEGs, fills sockets fast
        self.stop = threading.Event()
        self.first = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set() and self.published < self.limit:
            self.viewer.publish(annotate(self.frame, [(7, "seven", 0.93)], 25.0), status(self.published))
            self.published += 1
            self.first.set()
            time.sleep(0.002)

    def __enter__(self):
        self.thread.start()
        self.first.wait(5)
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)


def raw_get(port: int, path: str, read: int = 65536, timeout: float = 5.0) -> bytes:
    """An HTTP request with the path sent byte for byte (no client-side normalisation)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while len(data) < read:
            chunk = sock.recv(read - len(data))
            if not chunk:
                break
            data += chunk
    return data


def first_jpeg(port: int) -> np.ndarray:
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
        while data.count(b"--" + BOUNDARY.encode()) < 2:
            chunk = sock.recv(65536)
            assert chunk, f"the server closed the stream: {data[:80]!r}"
            data += chunk
    part = data.split(b"--" + BOUNDARY.encode())[1]
    jpeg = part.split(b"\r\n\r\n", 1)[1].rstrip(b"\r\n")
    return cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)


@pytest.mark.parametrize("text,expected", [("8080", ("127.0.0.1", 8080)), ("0.0.0.0:9000", ("0.0.0.0", 9000)),
                                           ("[::1]:81", ("::1", 81)), (":7000", ("127.0.0.1", 7000))])
def test_parse_bind_defaults_to_loopback(text, expected):
    assert parse_bind(text) == expected


@pytest.mark.parametrize("text", ["", "http", "host:", "1:99999"])
def test_parse_bind_refuses_nonsense(text):
    with pytest.raises(UsageError):
        parse_bind(text)


def test_routes_status_and_a_decodable_mjpeg_stream():
    with ViewerServer("127.0.0.1", 0) as viewer, Publisher(viewer):
        assert viewer._httpd.server_address[0] == "127.0.0.1"
        page = urllib.request.urlopen(viewer.url, timeout=5).read().decode()
        assert "/stream.mjpg" in page and "/status.json" in page
        body = json.loads(urllib.request.urlopen(viewer.url + "status.json?x=1", timeout=5).read())
        assert body["top_k"][0]["label"] == "seven"
        frame = first_jpeg(viewer.port)
        assert frame is not None and frame.shape == (240, 320, 3)


@pytest.mark.parametrize("path", ["/../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "//etc/passwd", "/etc/passwd",
                                  "/index.html", "/web/index.html", "/serve.py", "/stream.mjpg/../../etc/passwd",
                                  "/status.json/..", "/..%2f..%2fetc%2fpasswd"])
def test_only_its_own_routes_are_served(path):
    with ViewerServer("127.0.0.1", 0) as viewer:
        reply = raw_get(viewer.port, path)
    assert reply.startswith(b"HTTP/1.0 404") or reply.startswith(b"HTTP/1.1 404"), reply[:80]
    assert b"root:" not in reply


def test_jpeg_is_encoded_once_per_frame_not_per_client_and_not_without_viewers():
    with ViewerServer("127.0.0.1", 0) as viewer:
        with Publisher(viewer, frames=20) as publisher:
            publisher.thread.join(5)
        assert viewer.shared.encoded == 0  # nobody watching: no encoding work on the device
        with Publisher(viewer, frames=200) as publisher:
            frames = [first_jpeg(viewer.port) for _ in range(3)]
            publisher.thread.join(10)
        assert all(f is not None for f in frames)
        assert 0 < viewer.shared.encoded <= publisher.published


def test_slow_and_disconnecting_clients_never_stall_publishing():
    with ViewerServer("127.0.0.1", 0) as viewer:
        stalled = []
        for _ in range(4):  # connect, ask for the stream, never read: their socket buffers fill up
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", viewer.port))
            sock.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
            stalled.append(sock)
        stop = threading.Event()

        def flapping_client():
            while not stop.is_set():
                with socket.create_connection(("127.0.0.1", viewer.port), timeout=5) as sock:
                    sock.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
                    sock.recv(1000)  # read a little, then hang up mid-frame

        flappers = [threading.Thread(target=flapping_client, daemon=True) for _ in range(3)]
        for thread in flappers:
            thread.start()
        with Publisher(viewer, frames=1500) as publisher:
            publisher.thread.join(60)
            finished = not publisher.thread.is_alive()
        stop.set()
        for thread in flappers:
            thread.join(5)
        assert finished and publisher.published == 1500  # publishing never waited for a client
        assert viewer.shared.encoded > 0
        deadline = time.monotonic() + 10
        while viewer.viewers > 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert viewer.viewers <= 4  # clients that hung up gave their slots back
        with Publisher(viewer, frames=50):
            assert first_jpeg(viewer.port) is not None  # and the server still serves a good client
        for sock in stalled:
            sock.close()


def test_too_many_viewers_get_503_not_a_thread_each():
    with ViewerServer("127.0.0.1", 0) as viewer, Publisher(viewer):
        held = []
        for _ in range(MAX_STREAM_CLIENTS):
            sock = socket.create_connection(("127.0.0.1", viewer.port), timeout=5)
            sock.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.recv(100)
            held.append(sock)
        reply = raw_get(viewer.port, "/stream.mjpg")
        for sock in held:
            sock.close()
    assert reply.startswith(b"HTTP/1.0 503")


def test_live_run_with_stalled_viewers_keeps_classifying(tmp_path, device_models):
    frames, _ = digit_frames(40, size=224)
    video = write_video(frames, tmp_path / "d.mkv", fps=25.0)
    port = free_port()
    stalled = []

    def connect_stalled_viewers(record):
        if record["frame"] == 5:
            for _ in range(3):
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.connect(("127.0.0.1", port))
                sock.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
                stalled.append(sock)

    summary = run(device_models.int8, "cpu", str(video),
                  RunOptions(loop=True, max_frames=600, serve=f"127.0.0.1:{port}", display=Display.HIDE),
                  on_frame=connect_stalled_viewers)
    for sock in stalled:
        sock.close()
    assert summary.frames == 600 and summary.url == f"http://127.0.0.1:{port}/"
    assert len(stalled) == 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_page_in_headless_chromium_shows_a_frame_and_a_label(tmp_path):
    with ViewerServer("127.0.0.1", 0) as viewer, Publisher(viewer):
        command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                   "--disable-component-update", "--disable-sync", "--no-first-run",
                   f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=3000", "--dump-dom", viewer.url]
        dom = subprocess.run(command, check=True, capture_output=True, text=True, timeout=90).stdout
    body = dom[dom.index("<body"):dom.index(">", dom.index("<body"))]
    assert 'data-label="seven"' in body
    width = int(body.split('data-frame-width="')[1].split('"')[0])
    assert width == 320  # the MJPEG frame was decoded and displayed (img naturalWidth)
    assert '<h2 id="label">seven</h2>' in dom
