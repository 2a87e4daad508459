// "What you'd write yourself": Express + the official svix library + undici, the shape
// Clerk's docs show, forwarding verified events to the same backend. No dedup (the
// library has none). For the side-by-side benchmark only (benches/load/run.sh).
// Env: PORT, SECRET, UPSTREAM (http://127.0.0.1:PORT/).
const express = require("express");
const { Webhook } = require("svix");
const { Pool } = require("undici");

const webhook = new Webhook(process.env.SECRET);
const upstream = new URL(process.env.UPSTREAM);
const pool = new Pool(upstream.origin, { connections: 128 });
const app = express();

app.post("/bench", express.raw({ type: "*/*", limit: "1mb" }), async (req, res) => {
  try {
    webhook.verify(req.body, req.headers);
  } catch (err) {
    return res.status(401).json({ error: "invalid_signature" });
  }
  try {
    const reply = await pool.request({
      path: upstream.pathname,
      method: "POST",
      headers: { "content-type": req.get("content-type") || "application/json" },
      body: req.body,
    });
    const body = await reply.body.text();
    res.status(reply.statusCode).send(body);
  } catch (err) {
    res.status(502).json({ error: "upstream_unavailable" });
  }
});

const server = app.listen(Number(process.env.PORT), "127.0.0.1");
server.keepAliveTimeout = 75000;
