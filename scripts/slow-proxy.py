#!/usr/bin/env python3
"""A slow schema registry for `make faults`: an HTTP proxy on 127.0.0.1 that forwards every
request to the real registry and holds each answer back for a few seconds, as an overloaded or
far-away registry would.

    slow-proxy.py --port 28091 --target http://127.0.0.1:28081 --delay 3

Prints "listening" once it accepts connections; stops on SIGTERM.
"""
import argparse
import http.client
import http.server
import signal
import sys
import time
import urllib.parse


def handler(target, delay):
    parsed = urllib.parse.urlsplit(target)

    class Slow(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def forward(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            time.sleep(delay)
            upstream = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
            self.send_response(answer.status)
            for k, v in answer.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            upstream.close()

        do_GET = do_POST = do_PUT = do_DELETE = forward

        def log_message(self, *args):
            pass

    return Slow


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True, help="port to listen on (127.0.0.1)")
    p.add_argument("--target", required=True, help="the real registry, e.g. http://127.0.0.1:28081")
    p.add_argument("--delay", type=float, default=3.0, help="seconds added to every answer (default 3)")
    a = p.parse_args()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", a.port), handler(a.target, a.delay))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("listening", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
