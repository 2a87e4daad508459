"""Clerk webhooks in FastAPI, behind hookwall: business logic only.

hookwall has already checked the signature over the raw bytes, the timestamp and the
message id, and sends only the event types routed here (examples/backends/clerk-hookwall.toml),
so there is no verification code below. Run: uvicorn app:app --port 3000
"""

from fastapi import FastAPI, Header, Request

app = FastAPI()

# Stand-ins for a database.
users: dict[str, dict] = {}
memberships: list[dict] = []


@app.post("/webhooks/clerk")
async def clerk_webhook(request: Request, hookwall_event_type: str = Header()):
    event = await request.json()
    data = event["data"]
    if hookwall_event_type in ("user.created", "user.updated"):
        email = next(
            (e["email_address"] for e in data.get("email_addresses", [])
             if e["id"] == data.get("primary_email_address_id")),
            None,
        )
        users[data["id"]] = {"first_name": data.get("first_name"), "email": email}
    elif hookwall_event_type == "user.deleted":
        users.pop(data["id"], None)
    elif hookwall_event_type == "organizationMembership.created":
        memberships.append({
            "organization": data["organization"]["id"],
            "user": data["public_user_data"]["user_id"],
            "role": data["role"],
        })
    # 2xx tells hookwall (and so Svix) the event is handled; anything else is retried.
    return {"handled": hookwall_event_type}


@app.get("/state")
async def state():
    return {"users": users, "memberships": memberships}
