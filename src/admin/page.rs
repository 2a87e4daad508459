//! `GET /` (contract §12): one HTML page for a person at the admin port: the routes (name,
//! path, provider, enforce, where events go) and the recent deliveries, newest first, with
//! links that filter them by route, outcome and id (the query of `/deliveries`).
//!
//! Rendered here, whole: no script, nothing loaded from elsewhere, and a
//! `Content-Security-Policy` that forbids both. Every string on it goes through `Html::text`,
//! which escapes `& < > " '`: ids and event types are a sender's choice, and so could be
//! markup. A sender's strings are shown as text only, never in an attribute (a link
//! carries them percent-encoded). An upstream is shown by its origin and path: its user info and query (which may
//! hold credentials) are not.

use std::fmt::Display;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

use super::query::{encode, filter};
use super::recent::time;
use crate::config::Route;
use crate::deliveries::{Delivery, Filter, Snapshot};
use crate::labels::Outcome;
use crate::route::Action;
use crate::state::Shared;

/// What the page may do: show itself and its inline style, nothing else.
pub(super) const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'";

const STYLE: &str = "
:root{--ink:#1f2430;--soft:#5b6478;--line:#e3e6ee;--bg:#f6f7fb;--card:#fff;--accent:#3451b2}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:var(--ink);background:var(--bg)}
header{background:#1f2430;color:#fff;padding:14px 28px;display:flex;align-items:baseline;gap:16px}
header h1{margin:0;font-size:20px;letter-spacing:.3px}
header .sub{color:#b9c0d4}
main{padding:18px 28px 40px;max-width:1500px}
h2{font-size:16px;margin:22px 0 10px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;overflow:auto}
table{border-collapse:collapse;width:100%}
th{font-size:12px;text-transform:uppercase;letter-spacing:.4px;color:var(--soft);text-align:left;background:#fafbfd}
th,td{padding:7px 12px;border-bottom:1px solid var(--line);vertical-align:top;white-space:nowrap}
tbody tr:last-child td{border-bottom:none}
tbody tr:hover{background:#f3f6ff}
td.num{text-align:right;font-variant-numeric:tabular-nums}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
a{color:var(--accent);text-decoration:none}
a:hover{text-decoration:underline}
td.id{max-width:460px;white-space:normal;word-break:break-all}
.key,.trace{color:var(--soft);font-size:11.5px}
.key{display:block}
.muted{color:var(--soft)}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
a.badge:hover{text-decoration:none;filter:brightness(.95)}
.ok{background:#dcf5e3;color:#16632f}
.seen{background:#e6ebf5;color:#3b4a6b}
.refused{background:#ffe6d5;color:#9a3d07}
.busy{background:#fff3c4;color:#7a5b00}
.failed{background:#fddcdc;color:#a11b1b}
.s2{color:#16632f}.s4{color:#9a3d07}.s5{color:#a11b1b;font-weight:600}
.summary{margin:0 0 10px;color:var(--soft)}
.chips{display:flex;flex-wrap:wrap;gap:6px;margin:0 0 12px}
.chips .badge{font-weight:500}
.filter{background:#e8ecfb;color:var(--accent);padding:1px 8px;border-radius:10px}
ul.rules{margin:0;padding:0;list-style:none}
.empty{padding:18px;color:var(--soft)}
footer{margin-top:18px;color:var(--soft);font-size:12.5px}
";

/// Most rows the page shows, whatever the ring holds: a page of 100,000 escaped rows would
/// be hundreds of MB built on the thread that answers the probes. `/deliveries` pages
/// through the rest.
const PAGE_ROWS: usize = 1000;

/// The answer to `GET /?{query}`.
pub(super) fn page(shared: &Shared, query: Option<&str>) -> Response<Full<Bytes>> {
    let ring = &shared.deliveries;
    let most = ring.capacity().min(PAGE_ROWS);
    let (status, filter) = match filter(query, most) {
        Ok(filter) => (StatusCode::OK, filter),
        // A hand-typed limit that is not a number: the page anyway, with the default.
        Err(_) => (
            StatusCode::BAD_REQUEST,
            filter(None, most).unwrap_or_default(),
        ),
    };
    let snapshot = ring.snapshot(&filter);
    let live = shared.live();
    let mut html = Html(String::with_capacity(
        16 * 1024 + 600 * snapshot.entries.len(),
    ));
    html.raw("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">")
        .raw("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")
        .raw("<title>hookwall · recent deliveries</title><style>")
        .raw(STYLE)
        .raw("</style></head><body><header><h1>hookwall</h1><span class=\"sub\">")
        .raw(env!("CARGO_PKG_VERSION"))
        .raw(" · ")
        .num(live.config.routes.len())
        .raw(" routes · what this process has seen</span></header><main>");
    routes(&mut html, &live.config.routes);
    html.raw("<h2>Recent deliveries</h2>");
    if ring.on() {
        summary(&mut html, &filter, &snapshot);
        deliveries(&mut html, &snapshot);
        let json = json_link(&filter);
        html.raw("<footer>The same as JSON: <a href=\"")
            .text(&json)
            .raw("\"><code>")
            .text(&json)
            .raw("</code></a>. Times are UTC, when the request arrived.</footer>");
    } else {
        html.raw("<div class=\"card empty\">Recent deliveries are off ")
            .raw("(<code>admin.recent_deliveries = 0</code>).</div>");
    }
    html.raw("</main></body></html>\n");

    let mut response = Response::new(Full::new(Bytes::from(html.0)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert::<HeaderName>(name, HeaderValue::from_static(value));
    }
    response
}

/// `/deliveries` with the page's filter.
fn json_link(filter: &Filter) -> String {
    let mut link = format!("/deliveries?limit={}", filter.limit);
    for (name, value) in [
        ("route", &filter.route),
        ("outcome", &filter.outcome),
        ("id", &filter.id),
    ] {
        if let Some(value) = value {
            link.push_str(&format!("&{name}={}", encode(value)));
        }
    }
    link
}

/// The routes table.
fn routes(html: &mut Html, routes: &[Route]) {
    html.raw("<h2>Routes</h2><div class=\"card\"><table class=\"routes\"><thead><tr>")
        .raw("<th>Route</th>")
        .raw("<th>Path</th><th>Provider</th><th>Mode</th><th>Where events go</th>")
        .raw("</tr></thead><tbody>");
    for route in routes {
        html.raw("<tr><td><a href=\"/?route=")
            .text(&encode(&route.name))
            .raw("\">")
            .text(&route.name)
            .raw("</a></td><td><code>")
            .text(&route.path)
            .raw("</code></td><td>")
            .text(route.scheme.provider())
            .raw("</td><td>")
            .raw(if route.enforce {
                "<span class=\"badge ok\">enforce</span>"
            } else {
                "<span class=\"badge busy\">shadow</span>"
            })
            .raw("</td><td><ul class=\"rules\">");
        for rule in &route.rules.0 {
            let events: Vec<&str> = rule.events.iter().map(|glob| glob.as_str()).collect();
            html.raw("<li><code>")
                .text(&events.join(", "))
                .raw("</code> → ");
            match &rule.action {
                Action::Forward(upstream) => html
                    .raw("forward to <code>")
                    .text(&format!("{}{}", upstream.origin, upstream.uri.path()))
                    .raw("</code>"),
                Action::Stream(stream) => html.raw("stream <code>").text(stream).raw("</code>"),
                Action::Drop => html.raw("drop"),
            };
            html.raw("</li>");
        }
        html.raw("</ul></td></tr>");
    }
    html.raw("</tbody></table></div>");
}

/// What is shown of how much, the filters in force, and the ring's counts by outcome.
fn summary(html: &mut Html, filter: &Filter, snapshot: &Snapshot) {
    html.raw("<p class=\"summary\">Showing <b>")
        .num(snapshot.entries.len())
        .raw("</b> of ")
        .num(snapshot.matched)
        .raw(" matching · the ring holds ")
        .num(snapshot.held)
        .raw(" of its ")
        .num(snapshot.capacity)
        .raw(", newest first");
    let filters = [
        ("route", &filter.route),
        ("outcome", &filter.outcome),
        ("id", &filter.id),
    ];
    if filters.iter().any(|(_, value)| value.is_some()) {
        html.raw(" · filtered by");
        for (name, value) in filters {
            if let Some(value) = value {
                html.raw(" <span class=\"filter\">")
                    .raw(name)
                    .raw(" = ")
                    .text(value)
                    .raw("</span>");
            }
        }
        html.raw(" · <a href=\"/\">show all</a>");
    }
    html.raw("</p><div class=\"chips\">");
    for &outcome in Outcome::ALL {
        let count = snapshot.by_outcome[outcome as usize];
        if count > 0 {
            html.raw("<a class=\"badge ")
                .raw(class(outcome))
                .raw("\" href=\"/?outcome=")
                .raw(outcome.label())
                .raw("\">")
                .raw(outcome.label())
                .raw(" ")
                .num(count)
                .raw("</a>");
        }
    }
    html.raw("</div>");
}

/// The deliveries table, newest first.
fn deliveries(html: &mut Html, snapshot: &Snapshot) {
    if snapshot.entries.is_empty() {
        let why = if snapshot.held == 0 {
            "No requests answered yet."
        } else {
            "No delivery matches these filters."
        };
        html.raw("<div class=\"card empty\">")
            .raw(why)
            .raw("</div>");
        return;
    }
    html.raw("<div class=\"card\"><table class=\"deliveries\"><thead><tr>")
        .raw("<th>Time (UTC)</th><th>Route</th><th>Id / key</th><th>Event type</th>")
        .raw("<th>Outcome</th><th>Status</th><th>Upstream</th><th>ms</th>")
        .raw("<th>Secret</th>");
    // The trace column only when there are traces to show.
    let traced = snapshot.entries.iter().any(|d| d.trace_id.is_some());
    if traced {
        html.raw("<th>Trace</th>");
    }
    html.raw("</tr></thead><tbody>");
    for delivery in &snapshot.entries {
        row(html, delivery, traced);
    }
    html.raw("</tbody></table></div>");
}

fn row(html: &mut Html, delivery: &Delivery, traced: bool) {
    let time = time(delivery);
    html.raw("<tr><td class=\"mono\" title=\"")
        .text(&time)
        .raw("\">")
        .text(&time.replace('T', " ").replace('Z', ""))
        .raw("</td><td><a href=\"/?route=")
        .text(&encode(delivery.route_label()))
        .raw("\">")
        .text(delivery.route_label())
        .raw("</a> <span class=\"muted\">")
        .text(delivery.provider.unwrap_or(""))
        .raw("</span></td><td class=\"mono id\">");
    match delivery.id.as_deref() {
        Some(id) => html
            .raw("<a href=\"/?id=")
            .text(&encode(id))
            .raw("\">")
            .text(id)
            .raw("</a>"),
        None => html.raw("<span class=\"muted\">—</span>"),
    };
    if let Some(key) = delivery
        .key
        .as_deref()
        .filter(|key| delivery.id.as_deref() != Some(*key))
    {
        html.raw("<span class=\"key\">key ")
            .text(key)
            .raw("</span>");
    }
    html.raw("</td><td class=\"mono\">")
        .text(delivery.event_type.as_deref().unwrap_or(""))
        .raw("</td><td><a class=\"badge ")
        .raw(class(delivery.outcome))
        .raw("\" href=\"/?outcome=")
        .raw(delivery.outcome.label())
        .raw("\">")
        .raw(delivery.outcome.label())
        .raw("</a></td>");
    status(html, Some(delivery.status));
    status(html, delivery.upstream_status);
    html.raw("<td class=\"num\">")
        .num(format_args!("{:.1}", delivery.duration_ms()))
        .raw("</td><td class=\"num\">");
    if let Some(index) = delivery.secret_index {
        html.num(index);
    }
    html.raw("</td>");
    if traced {
        html.raw("<td class=\"mono trace\">")
            .text(delivery.trace_id.as_deref().unwrap_or(""))
            .raw("</td>");
    }
    html.raw("</tr>");
}

/// A status cell, coloured by its class.
fn status(html: &mut Html, status: Option<u16>) {
    match status {
        Some(status) => html
            .raw("<td class=\"num s")
            .num(status / 100)
            .raw("\">")
            .num(status)
            .raw("</td>"),
        None => html.raw("<td class=\"num muted\">—</td>"),
    };
}

/// The colour of an outcome: delivered, seen before, refused (the sender's fault), busy
/// (try again), or failed (the upstream's or hookwall's store).
fn class(outcome: Outcome) -> &'static str {
    use Outcome as O;
    match outcome {
        O::Forwarded | O::Queued => "ok",
        O::Duplicate | O::Filtered => "seen",
        O::HeadersTooLarge
        | O::NotFound
        | O::MethodNotAllowed
        | O::BodyTooLarge
        | O::BodyTimeout
        | O::MissingHeader
        | O::MalformedHeader
        | O::TimestampTooOld
        | O::TimestampTooNew
        | O::InvalidSignature => "refused",
        O::Overloaded | O::InFlight => "busy",
        O::UpstreamRejected | O::UpstreamUnavailable | O::UpstreamTimeout | O::StoreUnavailable => {
            "failed"
        }
    }
}

/// The page being written: `raw` for the page's own markup, `text` for any string that is
/// not (escaped), `num` for numbers.
struct Html(String);

impl Html {
    fn raw(&mut self, markup: &str) -> &mut Self {
        self.0.push_str(markup);
        self
    }

    fn text(&mut self, text: &str) -> &mut Self {
        for c in text.chars() {
            match c {
                '&' => self.0.push_str("&amp;"),
                '<' => self.0.push_str("&lt;"),
                '>' => self.0.push_str("&gt;"),
                '"' => self.0.push_str("&quot;"),
                '\'' => self.0.push_str("&#39;"),
                c => self.0.push(c),
            }
        }
        self
    }

    fn num(&mut self, number: impl Display) -> &mut Self {
        use std::fmt::Write as _;
        let _ = write!(self.0, "{number}");
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        let mut html = Html(String::new());
        html.raw("<td title=\"")
            .text(r#"<img src=x onerror=alert(1)>"&'"#)
            .raw("\">");
        assert_eq!(
            html.0,
            "<td title=\"&lt;img src=x onerror=alert(1)&gt;&quot;&amp;&#39;\">"
        );
    }

    #[test]
    fn every_outcome_has_a_colour() {
        for &outcome in Outcome::ALL {
            assert!(["ok", "seen", "refused", "busy", "failed"].contains(&class(outcome)));
        }
    }
}
