// GitHub's signing with octokit's own library (@octokit/webhooks-methods), for the tests.
//
//   node github.mjs sign  < [{"secret", "body"}, ...]  -> ["sha256=...", ...]
//   node github.mjs serve   a backend that verifies X-Hub-Signature-256 again with the
//                           library (secret: $GITHUB_SECRET); prints `PORT <n>`. 200
//                           {"verified": true, ...} or 401; GET /received lists them.
import { createServer } from "node:http";
import { sign, verify } from "@octokit/webhooks-methods";

const [, , mode] = process.argv;

if (mode === "sign") {
  let input = "";
  for await (const chunk of process.stdin) input += chunk;
  const requests = JSON.parse(input);
  const signatures = [];
  for (const { secret, body } of requests) signatures.push(await sign(secret, body));
  console.log(JSON.stringify(signatures));
} else if (mode === "serve") {
  const received = [];
  const server = createServer(async (req, res) => {
    const reply = (status, value) => {
      const data = JSON.stringify(value);
      res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(data) });
      res.end(data);
    };
    if (req.method === "GET") return reply(200, received);
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const body = Buffer.concat(chunks).toString("utf8");
    const signature = req.headers["x-hub-signature-256"] ?? "";
    let verified = false;
    try {
      verified = await verify(process.env.GITHUB_SECRET, body, signature);
    } catch {}
    const record = {
      verified,
      delivery: req.headers["x-github-delivery"],
      event_type: req.headers["hookwall-event-type"] ?? null,
      length: Buffer.byteLength(body),
    };
    received.push(record);
    reply(verified ? 200 : 401, record);
  });
  server.listen(0, "127.0.0.1", () => console.log(`PORT ${server.address().port}`));
} else {
  console.error("usage: node github.mjs sign|serve");
  process.exit(1);
}
