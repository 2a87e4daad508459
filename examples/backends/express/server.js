// Clerk webhooks in Express, behind hookwall: business logic only.
//
// hookwall has already checked the signature over the raw bytes, the timestamp and the
// message id, and sends only the event types routed here
// (examples/backends/clerk-hookwall.toml), so there is no verification code below.
// Run: npm install && PORT=3000 node server.js
const express = require("express");

const app = express();
app.use(express.json({ limit: "1mb" }));

// Stand-ins for a database.
const users = new Map();
const memberships = [];

app.post("/webhooks/clerk", (req, res) => {
  const type = req.get("hookwall-event-type");
  const data = req.body.data;
  switch (type) {
    case "user.created":
    case "user.updated": {
      const primary = (data.email_addresses || []).find((e) => e.id === data.primary_email_address_id);
      users.set(data.id, { first_name: data.first_name, email: primary ? primary.email_address : null });
      break;
    }
    case "user.deleted":
      users.delete(data.id);
      break;
    case "organizationMembership.created":
      memberships.push({
        organization: data.organization.id,
        user: data.public_user_data.user_id,
        role: data.role,
      });
      break;
  }
  // 2xx tells hookwall (and so Svix) the event is handled; anything else is retried.
  res.json({ handled: type });
});

app.get("/state", (req, res) => {
  res.json({ users: Object.fromEntries(users), memberships });
});

const server = app.listen(Number(process.env.PORT || 3000), "127.0.0.1", () => {
  console.log(`PORT ${server.address().port}`);
});
