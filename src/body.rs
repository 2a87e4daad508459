//! Reading a request body before its signature is checked, so from a stranger: it holds
//! only what it has sent. Its room in the body budget is charged as bytes arrive (the
//! declared Content-Length is only checked against `max_body_bytes`; a body that needs
//! more than one piece is also charged its connection's read buffer), it must keep up
//! `min_body_rate` after a first second, and once stalled it gives its room up to a body
//! that is arriving when the budget is full.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap};
use http_body_util::BodyExt as _;
use tokio::time::{Instant, Sleep};

use crate::budget::{Room, WorkerBudget};
use crate::config::Limits;

/// How long a body may take before `min_body_rate` applies.
pub const GRACE: Duration = Duration::from_secs(1);

/// Why a body was not read whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("body larger than limits.max_body_bytes")]
    TooLarge,
    #[error("body not complete within limits.body_read_timeout, or cut short")]
    Timeout,
    #[error("body slower than limits.min_body_rate")]
    TooSlow,
    #[error("body stalled while the budget was full; its room went to a body that was arriving")]
    GaveWay,
    #[error("request bodies being read already hold limits.max_buffered_bytes")]
    BudgetFull,
}

/// Reads the whole body: refused at once if its declared length passes `max_body_bytes`,
/// or as soon as more than that has arrived; 408 if not complete within
/// `body_read_timeout`, if it falls behind `min_body_rate` after `GRACE`, or if it gave its
/// room up; `BudgetFull` if there is no room for what arrived. A body that arrives in one
/// piece is not copied.
pub async fn read<B>(
    mut body: B,
    headers: &HeaderMap,
    limits: &Limits,
    budget: &Arc<WorkerBudget>,
) -> Result<(Bytes, Room), BodyError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max_body_bytes) {
        return Err(BodyError::TooLarge);
    }
    let started = Instant::now();
    let read_by = started + limits.body_read_timeout;
    let mut pace = Pace::new(started, limits.min_body_rate);
    let mut room = budget.room();
    let mut buffer = Buffer::default();
    // Made only once a piece is not there at once: the common body is, whole.
    let mut timer: Option<Pin<Box<Sleep>>> = None;
    loop {
        let frame = match now_or_pending(body.frame()).await {
            Some(frame) => frame,
            None => {
                let due = pace.paid_until.min(read_by);
                let timer = match &mut timer {
                    Some(timer) => {
                        timer.as_mut().reset(due);
                        timer
                    }
                    None => timer.insert(Box::pin(tokio::time::sleep_until(due))),
                };
                tokio::select! {
                    biased;
                    frame = body.frame() => frame,
                    () = timer.as_mut() => {
                        return Err(if due < read_by { BodyError::TooSlow } else { BodyError::Timeout });
                    }
                    () = room.gave_way() => return Err(BodyError::GaveWay),
                }
            }
        };
        let data = match frame {
            None => break,
            // The sender went away or broke the framing: the body never arrived whole.
            Some(Err(_)) => return Err(BodyError::Timeout),
            Some(Ok(frame)) => match frame.into_data() {
                // An empty DATA frame (HTTP/2) is no progress: it pays nothing, and does
                // not count as a byte that arrived.
                Ok(data) if data.is_empty() => continue,
                Ok(data) => data,
                Err(_) => continue,
            },
        };
        if buffer.received + data.len() as u64 > limits.max_body_bytes {
            return Err(BodyError::TooLarge);
        }
        let data_len = data.len() as u64;
        pace.paid(Instant::now(), data_len);
        let more = !body.is_end_stream();
        if more {
            // Paid before it is charged: a body never makes room by taking back its own
            // for the piece it pays with.
            room.arrived(data_len, limits.min_body_rate);
        }
        buffer.push(data, &mut room)?;
        if more && !buffer.pays_for_reading {
            // A body still arriving also holds its connection's read buffer.
            charge(&mut room, limits.read_buffer_bytes())?;
            buffer.pays_for_reading = true;
        }
    }
    // Whole: from now on the room is held until the request ends (a verified body waiting
    // for its upstream still counts), never given up to another body. If the budget took
    // it back meanwhile, the body is not counted whole: refused as if it stalled.
    if !room.settle() {
        return Err(BodyError::GaveWay);
    }
    Ok((buffer.into_bytes(), room))
}

/// What `future` gives on its first poll, or `None` if it is not ready yet (the waker is
/// registered all the same).
async fn now_or_pending<F: Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| match future.as_mut().poll(cx) {
        Poll::Ready(output) => Poll::Ready(Some(output)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

/// `min_body_rate` over any one-second window, not on average: each byte pays `1/rate` of a
/// second of the body's time, and a body may be paid up at most one second ahead of now
/// (or of the end of `GRACE`). So a body that sent 900 KB at once and then trickles falls
/// behind a second after it slowed down, not when its average does (which would be ~14 s).
struct Pace {
    rate: u64,
    grace_ends: Instant,
    /// The body falls behind at this instant unless more arrives.
    paid_until: Instant,
}

/// How far ahead of now a body may pay: the window of `min_body_rate`.
const WINDOW: Duration = Duration::from_secs(1);

impl Pace {
    fn new(started: Instant, rate: u64) -> Pace {
        let grace_ends = started + GRACE;
        let paid_until = if rate == 0 {
            // No rate: `body_read_timeout` alone bounds the body.
            started + Duration::from_secs(365 * 24 * 3600)
        } else {
            grace_ends
        };
        Pace {
            rate,
            grace_ends,
            paid_until,
        }
    }

    /// `bytes` arrived at `now`.
    fn paid(&mut self, now: Instant, bytes: u64) {
        if self.rate == 0 {
            return;
        }
        let bought = Duration::from_secs_f64(bytes as f64 / self.rate as f64);
        let at_most = now.max(self.grace_ends) + WINDOW;
        self.paid_until = (self.paid_until + bought).min(at_most);
    }
}

/// The bytes received so far, as they came (not copied: each piece is a slice of the
/// connection's read buffer), joined into one once the body is whole. What the pieces
/// hold is charged as they arrive.
#[derive(Default)]
struct Buffer {
    /// The first piece: for most bodies, the whole of it (no allocation for a list).
    first: Option<Bytes>,
    rest: Vec<Bytes>,
    received: u64,
    /// Whether the room covers the connection's read buffer too (once the body needs
    /// more than one piece).
    pays_for_reading: bool,
}

impl Buffer {
    fn push(&mut self, data: Bytes, room: &mut Room) -> Result<(), BodyError> {
        charge(room, data.len())?;
        self.received += data.len() as u64;
        match self.first {
            None => self.first = Some(data),
            Some(_) => self.rest.push(data),
        }
        Ok(())
    }

    /// The body in one piece: the one that came, or all of them joined (allocated once,
    /// at its length).
    fn into_bytes(self) -> Bytes {
        match (self.first, self.rest.is_empty()) {
            (None, _) => Bytes::new(),
            (Some(whole), true) => whole,
            (Some(first), false) => {
                let mut whole = BytesMut::with_capacity(self.received as usize);
                for piece in std::iter::once(&first).chain(&self.rest) {
                    whole.extend_from_slice(piece);
                }
                whole.freeze()
            }
        }
    }
}

fn charge(room: &mut Room, bytes: usize) -> Result<(), BodyError> {
    if room.grow_or_make_room(bytes as u64) {
        Ok(())
    } else {
        Err(BodyError::BudgetFull)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::Budget;
    use http::HeaderValue;
    use http_body_util::channel::{Channel, Sender};
    use http_body_util::Full;

    fn limits(min_body_rate: u64) -> Limits {
        let s = Duration::from_secs;
        Limits {
            max_body_bytes: 100_000,
            max_headers: 100,
            max_header_bytes: 1_024,
            header_read_timeout: s(10),
            body_read_timeout: s(30),
            max_connections: 10,
            h2_max_concurrent_streams: 10,
            shutdown_delay: s(0),
            shutdown_grace: s(1),
            idle_timeout: s(60),
            max_buffered_bytes: 10_000,
            min_body_rate,
            workers: 1,
        }
    }

    /// What a body that needs more than one piece is also charged (`read_buffer_bytes`).
    const READ: u64 = 16 * 1024;

    fn budget(max: u64) -> (Arc<Budget>, Arc<WorkerBudget>) {
        let budget = Arc::new(Budget::new(max, 1));
        let worker = budget.for_workers()[0].clone();
        (budget, worker)
    }

    fn declaring(len: u64) -> HeaderMap {
        HeaderMap::from_iter([(header::CONTENT_LENGTH, HeaderValue::from(len))])
    }

    /// Reads `body` whole, declaring `len`.
    async fn read_all(
        body: Bytes,
        len: u64,
        worker: &Arc<WorkerBudget>,
    ) -> Result<(Bytes, Room), BodyError> {
        read(Full::new(body), &declaring(len), &limits(0), worker).await
    }

    type Reading = tokio::task::JoinHandle<Result<(Bytes, Room), BodyError>>;

    /// Reads a body that arrives through the returned sender, in a task of its own.
    fn reading(len: u64, limits: Limits, worker: &Arc<WorkerBudget>) -> (Sender<Bytes>, Reading) {
        let (sender, body) = Channel::<Bytes>::new(4);
        let worker = worker.clone();
        let task = tokio::spawn(async move { read(body, &declaring(len), &limits, &worker).await });
        (sender, task)
    }

    #[tokio::test]
    async fn a_body_in_one_piece_is_not_copied_and_holds_its_length() {
        let (budget, worker) = budget(10_000);
        let sent = Bytes::from_static(b"{\"type\":\"user.created\"}");
        let (body, room) = read_all(sent.clone(), 23, &worker).await.unwrap();
        assert_eq!(body.as_ptr(), sent.as_ptr(), "not copied");
        assert_eq!((room.bytes(), budget.held()), (23, 23));
        drop(room);
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test]
    async fn a_body_is_charged_for_what_arrived_never_for_what_it_declares() {
        let (budget, worker) = budget(100_000);
        let (mut sender, task) = reading(9_000, limits(0), &worker);
        sender
            .send_data(Bytes::from(vec![b'a'; 100]))
            .await
            .unwrap();
        sender
            .send_data(Bytes::from(vec![b'b'; 100]))
            .await
            .unwrap();
        // What arrived and the read buffer are what is held; nothing for the 8,800 to come.
        crate::budget::tests::until(|| budget.held() == 200 + READ).await;
        sender
            .send_data(Bytes::from(vec![b'c'; 8_800]))
            .await
            .unwrap();
        drop(sender);
        let (body, room) = task.await.unwrap().unwrap();
        assert_eq!(body.len(), 9_000);
        assert_eq!(room.bytes(), 9_000 + READ, "never more than declared");
        assert_eq!(&body[..3], b"aaa");
        assert_eq!(&body[8_997..], b"ccc");
    }

    #[tokio::test]
    async fn too_large_by_declaration_or_by_arrival() {
        let (budget, worker) = budget(1_000_000);
        let too_long = read_all(Bytes::new(), 100_001, &worker);
        assert_eq!(too_long.await.unwrap_err(), BodyError::TooLarge);
        let (mut sender, task) = reading(100_000, limits(0), &worker);
        for _ in 0..11 {
            if sender
                .send_data(Bytes::from(vec![0; 10_000]))
                .await
                .is_err()
            {
                break;
            }
        }
        assert_eq!(task.await.unwrap().unwrap_err(), BodyError::TooLarge);
        assert_eq!(budget.held(), 0);
    }

    /// On paused time: a body that falls behind `min_body_rate` after the first second is
    /// cut off when it does (500 bytes at 1,000 B/s: at 1.5 s), not at `body_read_timeout`.
    #[tokio::test(start_paused = true)]
    async fn a_body_slower_than_min_body_rate_is_cut_off_when_it_falls_behind() {
        let (budget, worker) = budget(100_000);
        let started = Instant::now();
        let (mut sender, task) = reading(2_000, limits(1_000), &worker);
        sender.send_data(Bytes::from(vec![0; 500])).await.unwrap();
        assert_eq!(task.await.unwrap().unwrap_err(), BodyError::TooSlow);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(1_500) && took < Duration::from_millis(1_600));
        drop(sender);
        assert_eq!(budget.held(), 0);
    }

    /// On paused time: the rate is kept over any one-second window, not on average. A body
    /// that sent five seconds' worth at once and then trickles a byte every 0.9 s is cut off
    /// one window after the grace (at 2 s), not when its average falls behind (at ~6 s).
    /// Empty DATA frames pay nothing.
    #[tokio::test(start_paused = true)]
    async fn a_fast_start_buys_one_window_and_empty_frames_buy_nothing() {
        let (budget, worker) = budget(100_000);
        for empty_frames in [false, true] {
            let started = Instant::now();
            let (mut sender, task) = reading(9_000, limits(1_000), &worker);
            sender.send_data(Bytes::from(vec![0; 5_000])).await.unwrap();
            let trickle = async {
                loop {
                    tokio::time::sleep(Duration::from_millis(if empty_frames { 100 } else { 900 }))
                        .await;
                    let piece = if empty_frames {
                        Bytes::new()
                    } else {
                        Bytes::from_static(b"x")
                    };
                    if sender.send_data(piece).await.is_err() {
                        return;
                    }
                }
            };
            let result = tokio::select! {
                result = task => result.unwrap(),
                () = trickle => unreachable!("the reader ended first"),
            };
            assert_eq!(result.unwrap_err(), BodyError::TooSlow);
            let took = started.elapsed();
            assert!(
                took >= Duration::from_millis(2_000) && took < Duration::from_millis(2_100),
                "{took:?}"
            );
        }
        assert_eq!(budget.held(), 0);
    }

    /// On paused time: with the budget full, a body that has stalled gives its room up to
    /// one that arrives (and is answered 408); one still arriving does not.
    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_gives_its_room_to_one_that_arrives() {
        // The stalled body holds its 6,000 and its read buffer; 4,000 more are left.
        let (budget, worker) = budget(6_000 + READ + 4_000);
        let (mut stalled, stalling) = reading(9_000, limits(0), &worker);
        stalled
            .send_data(Bytes::from(vec![0; 3_000]))
            .await
            .unwrap();
        stalled
            .send_data(Bytes::from(vec![0; 3_000]))
            .await
            .unwrap();
        crate::budget::tests::until(|| budget.held() == 6_000 + READ).await;
        // Not yet stalled: the arriving body is refused, the first keeps its room.
        let arriving = read_all(Bytes::from(vec![1; 5_000]), 5_000, &worker);
        assert_eq!(arriving.await.unwrap_err(), BodyError::BudgetFull);
        tokio::time::sleep(crate::budget::STALLED).await;
        let arriving = read_all(Bytes::from(vec![1; 5_000]), 5_000, &worker);
        let (body, room) = arriving.await.unwrap();
        assert_eq!((body.len(), room.bytes()), (5_000, 5_000));
        assert_eq!(stalling.await.unwrap().unwrap_err(), BodyError::GaveWay);
        drop(stalled);
        assert_eq!(budget.held(), 5_000);
    }
}
