"""The providers' own libraries, for the tests: Stripe (`stripe`), Slack (`slack_sdk`) and
Shopify's documented HMAC (Shopify publishes no verifying library for Python).

    providers.py sign    < [{"provider", "secret", "body", "timestamp"?}, ...]  -> [headers, ...]
    providers.py serve   a backend that verifies each request again with the library
                         (POST /stripe, /slack, /shopify; secrets from $STRIPE_SECRET,
                         $SLACK_SECRET, $SHOPIFY_SECRET); prints `PORT <n>` once listening.
                         200 {"verified": true, ...} or 401 {"verified": false, "error": ...};
                         GET /received lists what it verified.
"""

import base64
import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import stripe
from slack_sdk.signature import SignatureVerifier


def shopify_hmac(secret, body):
    """Shopify's documented verification: base64 of HMAC-SHA256(secret, raw body)."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def sign(request):
    provider, secret, body = request["provider"], request["secret"], request["body"]
    timestamp = request.get("timestamp") or int(time.time())
    if provider == "stripe":
        header = stripe.WebhookSignature.generate_signature_header(body, secret, timestamp)
        return {"stripe-signature": header}
    if provider == "slack":
        signature = SignatureVerifier(secret).generate_signature(
            timestamp=str(timestamp), body=body
        )
        return {"x-slack-request-timestamp": str(timestamp), "x-slack-signature": signature}
    if provider == "shopify":
        return {"x-shopify-hmac-sha256": shopify_hmac(secret, body.encode())}
    raise SystemExit(f"unknown provider {provider}")


RECEIVED = []


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        error = self.verify(self.path.split("?")[0], body)
        record = {
            "path": self.path,
            "verified": error is None,
            "event_type": self.headers.get("hookwall-event-type"),
            "length": len(body),
        }
        RECEIVED.append(record)
        self.reply(200 if error is None else 401, dict(record, error=error))

    def verify(self, path, body):
        try:
            if path == "/stripe":
                stripe.WebhookSignature.verify_header(
                    body, self.headers.get("stripe-signature"), os.environ["STRIPE_SECRET"], 300
                )
            elif path == "/slack":
                verifier = SignatureVerifier(os.environ["SLACK_SECRET"])
                if not verifier.is_valid(
                    body=body,
                    timestamp=self.headers.get("x-slack-request-timestamp", ""),
                    signature=self.headers.get("x-slack-signature", ""),
                ):
                    return "slack_sdk: invalid signature"
            elif path == "/shopify":
                want = shopify_hmac(os.environ["SHOPIFY_SECRET"], body)
                got = self.headers.get("x-shopify-hmac-sha256", "")
                if not hmac.compare_digest(want, got):
                    return "shopify: invalid HMAC"
            else:
                return f"no provider at {path}"
        except Exception as err:  # the library's own refusal, as it says it
            return f"{type(err).__name__}: {err}"
        return None

    def do_GET(self):
        self.reply(200, RECEIVED)

    def reply(self, status, value):
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    if sys.argv[1] == "sign":
        print(json.dumps([sign(r) for r in json.load(sys.stdin)]))
    elif sys.argv[1] == "serve":
        server = HTTPServer(("127.0.0.1", 0), Handler)
        print(f"PORT {server.server_port}", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            sys.exit(0)
