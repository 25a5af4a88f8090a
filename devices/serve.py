"""The web viewer (`edgecnn run --serve [HOST:]PORT`): the live annotated video and the current top-k,
for a device without a screen.

Three routes and nothing else: "/" (a small page), "/stream.mjpg" (MJPEG) and "/status.json". No
files are served, so no path can reach the filesystem. Bound to 127.0.0.1 unless a host is given.

Inference never waits for a client: ``publish`` only swaps a reference. One encoder thread turns the
newest frame into JPEG once (never once per client, and not at all while nobody watches); each client
thread sends the newest JPEG when it can, so a slow client skips frames instead of buffering them, and
one that stalls is dropped by its socket timeout.
"""
from __future__ import annotations

import json
import select
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Optional
from urllib.parse import urlsplit

import numpy as np

from edgecnn.errors import UsageError

BOUNDARY = "edgecnnframe"
MAX_STREAM_CLIENTS = 8
CLIENT_TIMEOUT_S = 10.0
JPEG_QUALITY = 80


def parse_bind(text: str) -> tuple[str, int]:
    """ "8080" -> ("127.0.0.1", 8080); "0.0.0.0:8080" -> ("0.0.0.0", 8080); "[::1]:8080" for IPv6."""
    raw = str(text).strip()
    host, _, port = raw.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"--serve '{text}' is not [HOST:]PORT", "for example --serve 8080 or --serve 0.0.0.0:8080")
    return host, int(port)


def page_html() -> bytes:
    return resources.files("edgecnn.devices").joinpath("web/index.html").read_bytes()


class _Shared:
    """The newest frame and status, and the one JPEG made from it; guarded by one condition."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.frame: Optional[np.ndarray] = None
        self.frame_seq = 0
        self.jpeg: Optional[bytes] = None
        self.jpeg_seq = 0
        self.status = b'{"frame": null, "top_k": []}'
        self.viewers = 0
        self.encoded = 0
        self.closing = False


class ViewerServer:
    """``with ViewerServer("127.0.0.1", 8080) as viewer: viewer.publish(frame, status)``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8080) -> None:
        self.host, self.requested_port = host, port
        self.shared = _Shared()
        self._page = page_html()
        self._httpd: Optional[ThreadingHTTPServer] = None
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        return self._httpd.server_address[1] if self._httpd else self.requested_port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> "ViewerServer":
        handler = type("BoundViewerHandler", (ViewerHandler,), {"shared": self.shared, "page": self._page})
        server_class = _IPv6Server if ":" in self.host else ThreadingHTTPServer
        try:
            self._httpd = server_class((self.host, self.requested_port), handler)
        except OSError as exc:
            raise UsageError(f"cannot serve on {self.host}:{self.requested_port} ({exc.strerror or exc})",
                             "choose another port with --serve") from None
        self._httpd.daemon_threads = True  # a stuck client never keeps the process alive
        for target, name in ((self._httpd.serve_forever, "edgecnn-http"), (self._encode_loop, "edgecnn-jpeg")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    @property
    def viewers(self) -> int:
        """Clients watching the video now (the loop skips drawing frames for nobody)."""
        return self.shared.viewers

    def publish(self, frame: Optional[np.ndarray], status: Optional[dict[str, Any]]) -> None:
        """Hand over the newest annotated frame and/or status: O(1), never blocks on clients."""
        body = None if status is None else json.dumps(status, separators=(",", ":")).encode()
        with self.shared.cond:
            if frame is not None:
                self.shared.frame = frame
                self.shared.frame_seq += 1
            if body is not None:
                self.shared.status = body
            self.shared.cond.notify_all()

    def _encode_loop(self) -> None:
        import cv2  # noqa: PLC0415

        shared = self.shared
        params = [int(cv2.IMWRITE_JPEG_QUALITY), JPEG_QUALITY]
        done = 0
        while True:
            with shared.cond:
                while not shared.closing and (shared.frame_seq == done or shared.viewers == 0):
                    shared.cond.wait(0.5)
                if shared.closing:
                    return
                frame, seq = shared.frame, shared.frame_seq
            ok, encoded = cv2.imencode(".jpg", frame, params)  # outside the lock: publish never waits for it
            done = seq
            if ok:
                with shared.cond:
                    shared.jpeg, shared.jpeg_seq = encoded.tobytes(), seq
                    shared.encoded += 1
                    shared.cond.notify_all()

    def stop(self) -> None:
        with self.shared.cond:
            self.shared.closing = True
            self.shared.cond.notify_all()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        for thread in self._threads:
            thread.join(timeout=2.0)

    def __enter__(self) -> "ViewerServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class ViewerHandler(BaseHTTPRequestHandler):
    shared: _Shared
    page: bytes
    timeout = CLIENT_TIMEOUT_S  # applied to the socket: a client that stops reading is dropped
    server_version = "edgecnn-viewer"
    sys_version = ""

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionError, TimeoutError):
            pass  # the client went away mid-request or mid-response: only its own thread ends, quietly

    def do_GET(self) -> None:  # noqa: N802 - the http.server naming
        route = urlsplit(self.path).path
        if route == "/":
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", self.page)
        elif route == "/status.json":
            with self.shared.cond:
                body = self.shared.status
            self._send(HTTPStatus.OK, "application/json", body)
        elif route == "/stream.mjpg":
            self._stream()
        else:
            self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n")

    def do_HEAD(self) -> None:  # noqa: N802
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", b"")

    def _headers(self, status: HTTPStatus, content_type: str, length: Optional[int]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy",
                         "default-src 'none'; img-src 'self'; connect-src 'self'; script-src 'unsafe-inline'; "
                         "style-src 'unsafe-inline'")
        self.end_headers()

    def _send(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
        self._headers(status, content_type, len(body))
        self.wfile.write(body)

    def _stream(self) -> None:
        shared = self.shared
        with shared.cond:
            if shared.viewers >= MAX_STREAM_CLIENTS:
                busy = True
            else:
                busy = False
                shared.viewers += 1
                shared.cond.notify_all()  # wake the encoder: someone is watching now
        if busy:
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", b"too many viewers\n")
            return
        try:
            self._headers(HTTPStatus.OK, f"multipart/x-mixed-replace; boundary={BOUNDARY}", None)
            self._send_frames()
        except (ConnectionError, TimeoutError, OSError):
            pass  # the client went away or stopped reading: only its own thread ends
        finally:
            with shared.cond:
                shared.viewers -= 1

    def _send_frames(self) -> None:
        shared = self.shared
        sent = 0
        while True:
            with shared.cond:
                if shared.jpeg_seq == sent and not shared.closing:
                    shared.cond.wait(1.0)
                if shared.closing:
                    return
                fresh = shared.jpeg_seq != sent
                if fresh:
                    jpeg, sent = shared.jpeg, shared.jpeg_seq
            if not fresh:
                if self._client_gone():
                    return  # hung up while no frames came: free the viewer slot now
                continue
            head = (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n").encode()
            self.wfile.write(head + jpeg + b"\r\n")
            self.wfile.flush()

    def _client_gone(self) -> bool:
        """True when the client closed its end (readable with nothing to read) or the socket failed."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet: the run prints its own lines
        return
