//! Reading a request body: within `max_body_bytes` and `body_read_timeout`, its bytes
//! held in a `Room` of the body budget, which gives itself back when dropped.

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap};
use http_body_util::BodyExt as _;
use std::sync::Arc;

use crate::budget::{Room, WorkerBudget};
use crate::config::Limits;

/// Why a body was not read whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("body larger than limits.max_body_bytes")]
    TooLarge,
    #[error("body not complete within limits.body_read_timeout, or cut short")]
    Timeout,
    #[error("request bodies being read already hold limits.max_buffered_bytes")]
    BudgetFull,
}

/// Reads the whole body within `body_read_timeout`, refusing it as soon as it is known to
/// be too large: from Content-Length before reading, or while reading. Its room is taken
/// before reading (the whole Content-Length), or frame by frame when it has none; no room
/// is `BudgetFull`. A body that arrives in one piece is not copied.
pub async fn read<B>(
    mut body: B,
    headers: &HeaderMap,
    limits: &Limits,
    budget: &Arc<WorkerBudget>,
) -> Result<(Bytes, Room), BodyError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    let max = limits.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max) {
        return Err(BodyError::TooLarge);
    }
    let mut room = budget.room();
    if !room.grow(declared.unwrap_or(0)) {
        return Err(BodyError::BudgetFull);
    }
    let deadline = tokio::time::Instant::now() + limits.body_read_timeout;
    let mut first: Option<Bytes> = None;
    let mut rest: Option<BytesMut> = None;
    let mut total: u64 = 0;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(BodyError::Timeout),
            Ok(None) => break,
            // The sender went away or broke the framing: the body never arrived whole.
            Ok(Some(Err(_))) => return Err(BodyError::Timeout),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len() as u64;
        if total > max {
            return Err(BodyError::TooLarge);
        }
        if total > room.bytes() && !room.grow(total - room.bytes()) {
            return Err(BodyError::BudgetFull);
        }
        match (&mut first, &mut rest) {
            (None, None) => first = Some(data),
            (Some(head), None) => {
                let capacity = declared.unwrap_or(total).min(max) as usize;
                let mut buf = BytesMut::with_capacity(capacity.max(total as usize));
                buf.extend_from_slice(head);
                buf.extend_from_slice(&data);
                rest = Some(buf);
            }
            (_, Some(buf)) => buf.extend_from_slice(&data),
        }
    }
    let body = match (first, rest) {
        (_, Some(buf)) => buf.freeze(),
        (Some(head), None) => head,
        (None, None) => Bytes::new(),
    };
    Ok((body, room))
}
