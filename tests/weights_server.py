"""A real HTTP server on 127.0.0.1 for download tests: serves files with byte ranges, counts the bytes it
sends, and can misbehave on request (cut the connection, stall, answer 404). With ``hub=True`` it also answers
as the Hugging Face Hub does for ``/OWNER/REPO/resolve/REVISION/FILE`` (HEAD and GET with the commit and the
file's SHA-256 as its ETag), so huggingface_hub downloads from it through ``endpoint=`` / ``HF_ENDPOINT``."""
from __future__ import annotations

import hashlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class WeightsServer:
    def __init__(self, files: dict[str, bytes], hub: bool = False):
        self.files = dict(files)
        self.hub = hub
        self.etags: dict[str, str] = {}  # a file's declared SHA-256 when it should not be its own
        self.commit = "0123456789abcdef0123456789abcdef01234567"
        self.sent = 0  # body bytes sent, all requests together
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.cut_after: int | None = None  # close the connection after this many body bytes (once)
        self.stall_after: int | None = None  # stop sending (and hold the connection) after this many
        self.ranges = True
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _hub_headers(self, name: str, data: bytes) -> None:
                if server.hub:
                    self.send_header("X-Repo-Commit", server.commit)
                    etag = server.etags.get(name, hashlib.sha256(data).hexdigest())
                    self.send_header("ETag", f'"{etag}"')

            def do_HEAD(self):  # noqa: N802 - http.server's name
                name = self.path.split("?")[0].rsplit("/", 1)[-1]
                server.requests.append(("HEAD " + self.path, None))
                data = server.files.get(name)
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self._hub_headers(name, data)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()

            def do_GET(self):  # noqa: N802 - http.server's name
                name = self.path.split("?")[0].rsplit("/", 1)[-1]  # a proxy request carries the whole URL
                server.requests.append((self.path, self.headers.get("Range")))
                data = server.files.get(name)
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng and server.ranges and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self._hub_headers(name, data)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                limit = len(body)
                if server.cut_after is not None:
                    limit, server.cut_after = min(limit, server.cut_after), None
                stall = server.stall_after
                if stall is not None:
                    limit = min(limit, stall)
                for i in range(0, limit, 65536):
                    chunk = body[i:min(i + 65536, limit)]
                    self.wfile.write(chunk)
                    server.sent += len(chunk)
                self.wfile.flush()
                if stall is not None:
                    time.sleep(30)  # hold the connection, send nothing
                self.close_connection = True

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):  # a client that hangs up (a cancel, a full
                pass  # disk) is what these tests do on purpose: no traceback on stderr

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
