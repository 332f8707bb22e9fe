"""A local webhook receiver that prints each alert it gets: for trying alerts without Slack or a mail server.

    python examples/webhook_receiver.py                 # listens on 127.0.0.1:8099
    python examples/webhook_receiver.py --port 9000

Point ``alerts.webhook.url`` in config.json at it (``"http://127.0.0.1:8099/"``); every alert a
tick sends is printed as its ``text`` as a Slack channel would show it, one block per alert.
Standard library only; Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def unescaped(text: str) -> str:
    """Return the text as a Slack channel shows it (the sender escapes &, < and > as Slack asks)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


class AlertPrinter(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's name)
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self.send_error(400, "not JSON")
            return
        print(f"--- {body.get('status', '?')} {body.get('event', '?')} at {body.get('at', '?')}", flush=True)
        print(unescaped(str(body.get("text", body))), flush=True)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print the alerts a webhook receives (for trying alerts locally).")
    parser.add_argument("--port", type=int, default=8099, help="port on 127.0.0.1 (default 8099)")
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), AlertPrinter)
    print(f"waiting for alerts on http://127.0.0.1:{args.port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
