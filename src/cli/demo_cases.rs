//! The demo's cases: what the sender (and once, an operator) does, and what the contract
//! says must come of each. `demo` sends them in order and checks each.

use super::signed::HeaderFamily;

/// Which demo key signs a case.
#[derive(Clone, Copy)]
pub(super) enum DemoKey {
    /// Signed as Stripe does, with `STRIPE_SECRET`.
    Stripe,
    New,
    Old,
    Billing,
    Forged,
    Ed25519,
}

/// One thing the sender does, and what the contract says must come of it.
pub(super) struct Case {
    pub(super) name: &'static str,
    pub(super) path: &'static str,
    pub(super) key: DemoKey,
    pub(super) family: HeaderFamily,
    pub(super) event: &'static str,
    /// `None`: a new id; `Some(i)`: the id of case `i` again.
    pub(super) reuse_id_of: Option<usize>,
    pub(super) timestamp_offset: i64,
    /// Status, outcome label, and whether the backend saw it.
    pub(super) expect: (u16, &'static str, bool),
    /// An operator forgets the id (`POST /dedup/forget`) before this case is sent.
    pub(super) forget_first: bool,
}

pub(super) const CLERK: &str = "/webhooks/clerk";
pub(super) const BILLING: &str = "/webhooks/billing";
pub(super) const STRIPE: &str = "/webhooks/stripe";

impl Case {
    const fn new(
        name: &'static str,
        path: &'static str,
        key: DemoKey,
        event: &'static str,
        expect: (u16, &'static str, bool),
    ) -> Case {
        Case {
            name,
            path,
            key,
            family: HeaderFamily::Svix,
            event,
            reuse_id_of: None,
            timestamp_offset: 0,
            expect,
            forget_first: false,
        }
    }

    /// With the id of case `i`.
    const fn again(self, i: usize) -> Case {
        Case {
            reuse_id_of: Some(i),
            ..self
        }
    }

    /// After an operator forgot the id.
    const fn forgotten(self) -> Case {
        Case {
            forget_first: true,
            ..self
        }
    }
}

/// The cases, in order.
pub(super) const CASES: [Case; 17] = [
    Case::new(
        "valid event",
        CLERK,
        DemoKey::New,
        "user.created",
        (200, "forwarded", true),
    ),
    Case::new(
        "same id again (retry)",
        CLERK,
        DemoKey::New,
        "user.created",
        (200, "duplicate", false),
    )
    .again(0),
    Case::new(
        "forged signature",
        CLERK,
        DemoKey::Forged,
        "user.created",
        (401, "invalid_signature", false),
    ),
    Case {
        timestamp_offset: -600,
        ..Case::new(
            "stale timestamp (10 min)",
            CLERK,
            DemoKey::New,
            "user.created",
            (401, "timestamp_too_old", false),
        )
    },
    Case::new(
        "old secret, still in rotation",
        CLERK,
        DemoKey::Old,
        "user.updated",
        (200, "forwarded", true),
    ),
    Case::new(
        "filtered type (drop rule)",
        BILLING,
        DemoKey::Billing,
        "session.ended",
        (200, "filtered", false),
    ),
    Case::new(
        "filtered type (no rule)",
        BILLING,
        DemoKey::Billing,
        "user.created",
        (200, "filtered", false),
    ),
    Case::new(
        "upstream fails (503)",
        BILLING,
        DemoKey::Billing,
        "invoice.paid",
        (503, "upstream_rejected", true),
    ),
    Case::new(
        "its retry",
        BILLING,
        DemoKey::Billing,
        "invoice.paid",
        (200, "forwarded", true),
    )
    .again(7),
    Case {
        family: HeaderFamily::Webhook,
        ..Case::new(
            "Standard Webhooks headers",
            CLERK,
            DemoKey::New,
            "user.deleted",
            (200, "forwarded", true),
        )
    },
    Case::new(
        "v1a (ed25519) signature",
        CLERK,
        DemoKey::Ed25519,
        "organizationMembership.created",
        (200, "forwarded", true),
    ),
    Case::new(
        "Stripe event (Stripe's scheme)",
        STRIPE,
        DemoKey::Stripe,
        "invoice.paid",
        (200, "forwarded", true),
    ),
    Case::new(
        "Stripe: the same event again",
        STRIPE,
        DemoKey::Stripe,
        "invoice.paid",
        (200, "duplicate", false),
    )
    .again(11),
    // The operator's loop: the backend acknowledged an event and lost the work; after the
    // fix, the operator forgets the id and the sender's resend goes through, once.
    Case::new(
        "an event the backend lost",
        CLERK,
        DemoKey::New,
        "user.updated",
        (200, "forwarded", true),
    ),
    Case::new(
        "its resend (Svix's Resend)",
        CLERK,
        DemoKey::New,
        "user.updated",
        (200, "duplicate", false),
    )
    .again(13),
    Case::new(
        "forgotten, then resent",
        CLERK,
        DemoKey::New,
        "user.updated",
        (200, "forwarded", true),
    )
    .again(13)
    .forgotten(),
    Case::new(
        "resent once more",
        CLERK,
        DemoKey::New,
        "user.updated",
        (200, "duplicate", false),
    )
    .again(13),
];
