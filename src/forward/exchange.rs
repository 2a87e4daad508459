//! One exchange with an upstream on a connection the client made ready: the request, the
//! status line, and the upstream's body, read up to 64 KiB.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;

use super::client::{ClientError, Lease, SendError};

/// Most bytes of an upstream's body passed back to the sender: the status is what a sender
/// acts on, and the bound keeps a misbehaving upstream from costing memory.
pub const MAX_REPLY_BODY_BYTES: usize = 64 * 1024;

/// What an upstream answered, as passed back to the sender.
#[derive(Debug, Clone)]
pub struct UpstreamReply {
    pub status: StatusCode,
    /// Only the upstream's `content-type` and `retry-after` (in the map its response came
    /// in, so passing them back allocates nothing).
    pub headers: HeaderMap,
    /// At most `MAX_REPLY_BODY_BYTES`.
    pub body: Bytes,
}

/// Why no complete answer came from the upstream. The messages leave out their sources:
/// the rescue point logs the whole chain once.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Nothing was written: the upstream cannot have acted on the request (§6: the id is
    /// released at once, and only such a forward is abandoned when its sender gives up).
    #[error("upstream unreachable or refused")]
    Connect(#[source] ClientError),
    /// The request was written, then the connection failed before a status line: the
    /// upstream may have seen it (the id is released all the same: only a 2xx delivers).
    #[error("upstream connection failed after the request was sent, before a status line")]
    Reset(#[source] hyper::Error),
    #[error("upstream reset before its body ended")]
    Body(#[source] hyper::Error),
    #[error("upstream took longer than {0:?}")]
    Timeout(Duration),
    /// The forward's task ended without an answer: this worker is shutting down.
    #[error("the forward was cut off by shutdown")]
    Cut,
}

/// The upstream request: `method` (POST, but in shadow mode) to `target` with `headers`
/// and `body`.
pub fn request(
    method: Method,
    target: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = method;
    *request.uri_mut() = target;
    *request.headers_mut() = headers;
    request
}

/// Why an exchange gave no complete answer.
pub enum Unanswered {
    /// A pooled connection closed before it took the request: the upstream never saw it.
    Unsent(Box<Request<Full<Bytes>>>),
    Failed(ForwardError),
}

/// Sends `request` on `lease` and reads the answer. `on_status` hears the status line as
/// soon as it arrives, before the body: a 2xx there means the upstream took the event,
/// even if its body then fails. The connection goes back to the pool only when the
/// answer was read to its end.
pub async fn exchange(
    lease: Lease<'_>,
    request: Request<Full<Bytes>>,
    on_status: impl FnOnce(StatusCode),
) -> Result<UpstreamReply, Unanswered> {
    let (response, lease) = lease.send(request).await.map_err(|err| match err {
        SendError::Unsent(request) => Unanswered::Unsent(request),
        SendError::NotTaken(err) => {
            Unanswered::Failed(ForwardError::Connect(ClientError::Http(err)))
        }
        SendError::Failed(err) => Unanswered::Failed(ForwardError::Reset(err)),
    })?;
    on_status(response.status());
    let (parts, body) = response.into_parts();
    let (body, ended) = read_reply(body).await.map_err(Unanswered::Failed)?;
    if ended {
        lease.reuse();
    }
    Ok(UpstreamReply {
        status: parts.status,
        headers: passed_back(parts.headers),
        body,
    })
}

/// Of the upstream's headers, those the sender gets: `content-type` and `retry-after`.
fn passed_back(mut headers: HeaderMap) -> HeaderMap {
    let content_type = headers.remove(header::CONTENT_TYPE);
    let retry_after = headers.remove(header::RETRY_AFTER);
    headers.clear();
    headers.extend(
        [
            content_type.map(|v| (header::CONTENT_TYPE, v)),
            retry_after.map(|v| (header::RETRY_AFTER, v)),
        ]
        .into_iter()
        .flatten(),
    );
    headers
}

/// The upstream's body up to `MAX_REPLY_BODY_BYTES`, and whether it ended there. A body
/// that arrives in one piece is not copied.
async fn read_reply(mut body: Incoming) -> Result<(Bytes, bool), ForwardError> {
    let mut whole = Bytes::new();
    let mut joined: Option<BytesMut> = None;
    let ended = loop {
        let held = joined.as_ref().map_or(whole.len(), BytesMut::len);
        if held >= MAX_REPLY_BODY_BYTES {
            break false;
        }
        let data = match body.frame().await {
            None => break true,
            Some(Err(err)) => return Err(ForwardError::Body(err)),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data.slice(..data.len().min(MAX_REPLY_BODY_BYTES - held)),
                Err(_) => continue,
            },
        };
        match &mut joined {
            Some(buf) => buf.extend_from_slice(&data),
            None if whole.is_empty() => whole = data,
            None => {
                let mut buf = BytesMut::with_capacity(whole.len() + data.len());
                buf.extend_from_slice(&whole);
                buf.extend_from_slice(&data);
                joined = Some(buf);
            }
        }
    };
    Ok((joined.map_or(whole, BytesMut::freeze), ended))
}
