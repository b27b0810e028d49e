//! hyper's timer for one connection: its header-read timeout on one tokio timer per connection,
//! moved to each request's deadline, instead of a new timer per request.
//!
//! hyper asks its timer for a new sleep each time it starts reading a request head, polls it while
//! the head is incomplete (on a keep-alive connection: while it waits for the next request) and
//! drops it once the head is in. With hyper-util's `TokioTimer` that is, per request, a timer
//! allocated, registered in tokio's timer wheel and removed from it again. Here every sleep of a
//! connection is a handle on the connection's one tokio [`Sleep`]: moving it to a later deadline
//! (each request's is later than the last) is an atomic store in tokio, the wheel untouched; the
//! timer leaves the wheel when the connection ends. A deadline that passes while no sleep waits
//! on it (the connection is busy with a request) only wakes the connection once, for nothing.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::time::Sleep;

use crate::util::lock;

/// The timer of one connection (give each connection its own).
pub struct ConnTimer {
    sleep: Arc<Mutex<Option<Pin<Box<Sleep>>>>>,
    /// The latest deadline of the first sleep: the connection's header-read deadline, which runs
    /// from its accept (the accept loop waited for its first bytes before handing it to hyper).
    first_by: Instant,
    first_taken: AtomicBool,
}

impl ConnTimer {
    /// A connection's timer whose first sleep ends by `first_by` at the latest.
    pub fn starting_by(first_by: Instant) -> Self {
        Self { sleep: Arc::default(), first_by, first_taken: AtomicBool::new(false) }
    }
}

impl hyper::rt::Timer for ConnTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, mut deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        // Only the connection's task asks: a load and a store, no read-modify-write.
        if !self.first_taken.load(Ordering::Relaxed) {
            self.first_taken.store(true, Ordering::Relaxed);
            deadline = deadline.min(self.first_by);
        }
        Box::pin(ConnSleep { timer: Arc::clone(&self.sleep), deadline: deadline.into() })
    }
}

/// A sleep of hyper's, on the connection's timer.
struct ConnSleep {
    timer: Arc<Mutex<Option<Pin<Box<Sleep>>>>>,
    deadline: tokio::time::Instant,
}

impl Future for ConnSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Only the connection's task polls its sleeps: the lock is never contended.
        let mut timer = lock(&self.timer);
        let sleep = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(self.deadline)));
        if sleep.deadline() != self.deadline {
            sleep.as_mut().reset(self.deadline);
        }
        sleep.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for ConnSleep {}
