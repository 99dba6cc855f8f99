"""A local HTTP server for the downloader tests (tests/test_fetch.c,
tests/urls_cli_test.py). Binds 127.0.0.1 on an ephemeral port and writes the
port number to PORT_FILE once it listens.

usage: http_server.py ROOT PORT_FILE

Routes (every request is counted by its path, query included):
  /files/NAME            the file ROOT/NAME
  /flaky/N/NAME          HTTP 500 for the first N requests of this path, then
                         ROOT/NAME
  /status/CODE           an HTML page with that status
  /hang/SECONDS          sleeps, then sends ROOT/hang.jpg (or a 404)
  /redirect/N/NAME       a 302 chain of N hops ending at /files/NAME
  /loop/a, /loop/b       302s to each other, forever
  /to-file               a 302 to file:///etc/passwd
  /big/BYTES             a JPEG-looking body of BYTES bytes with Content-Length
  /bigstream/BYTES       the same without Content-Length (ends at close)
  /html                  a small text/html page
  /__counts              JSON {path: requests} (not counted itself)
"""
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = sys.argv[1]
PORT_FILE = sys.argv[2]
counts = {}
lock = threading.Lock()
JPEG_HEAD = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, fmt, *args):  # quiet: tests read counts instead
        pass

    def send_body(self, code, body, ctype, length=True):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading (size cap, not an image)

    def send_file(self, name):
        path = os.path.join(ROOT, os.path.basename(name))
        if not os.path.isfile(path):
            self.send_body(404, b"<html>not found</html>", "text/html")
            return
        with open(path, "rb") as f:
            data = f.read()
        ctype = "image/png" if path.endswith(".png") else "image/jpeg"
        self.send_body(200, data, ctype)

    def redirect(self, location):
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        path = self.path
        if path == "/__counts":
            with lock:
                body = json.dumps(counts).encode()
            self.send_body(200, body, "application/json")
            return
        with lock:
            counts[path] = counts.get(path, 0) + 1
            n_seen = counts[path]
        parts = path.strip("/").split("/")
        try:
            if parts[0] == "files" and len(parts) == 2:
                self.send_file(parts[1])
            elif parts[0] == "flaky" and len(parts) == 3:
                if n_seen <= int(parts[1]):
                    self.send_body(500, b"<html>try again</html>", "text/html")
                else:
                    self.send_file(parts[2])
            elif parts[0] == "status" and len(parts) == 2:
                self.send_body(int(parts[1]), b"<html>status</html>", "text/html")
            elif parts[0] == "hang" and len(parts) == 2:
                time.sleep(float(parts[1]))
                self.send_file("hang.jpg")
            elif parts[0] == "redirect" and len(parts) == 3:
                n = int(parts[1])
                self.redirect(f"/redirect/{n - 1}/{parts[2]}" if n > 0 else f"/files/{parts[2]}")
            elif parts[0] == "loop" and len(parts) == 2:
                self.redirect("/loop/b" if parts[1] == "a" else "/loop/a")
            elif parts[0] == "to-file":
                self.redirect("file:///etc/passwd")
            elif parts[0] in ("big", "bigstream") and len(parts) == 2:
                n = int(parts[1])
                body = (JPEG_HEAD + b"\0" * n)[:n]
                self.send_body(200, body, "image/jpeg", length=parts[0] == "big")
            elif parts[0] == "html":
                self.send_body(200, b"<!doctype html><html><body>hello</body></html>",
                               "text/html; charset=utf-8")
            else:
                self.send_body(404, b"<html>no such route</html>", "text/html")
        except ValueError:
            self.send_body(400, b"<html>bad request</html>", "text/html")


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    tmp = PORT_FILE + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(tmp, PORT_FILE)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
