"""A backend that verifies with the official svix library, to prove `hookwall send` signs
exactly as Svix does. Prints `PORT <n>` once listening on 127.0.0.1; 204 if the
signature verifies, 401 with the library's message if not. Secret: $SVIX_SECRET."""

import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from svix.webhooks import Webhook, WebhookVerificationError

WEBHOOK = Webhook(os.environ["SVIX_SECRET"])


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        try:
            WEBHOOK.verify(body, dict(self.headers.items()))
        except WebhookVerificationError as err:
            reply = str(err).encode()
            self.send_response(401)
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)
            return
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", 0), Handler)
print(f"PORT {server.server_port}", flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    sys.exit(0)
