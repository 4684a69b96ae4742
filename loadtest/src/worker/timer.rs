//! A precise timer for scheduled sends.
//!
//! tokio's timers tick in whole milliseconds and round a deadline up to the
//! next tick, so a send scheduled with `sleep_until` goes out 0-1 ms late on
//! an idle machine. Stamped with its scheduled time (as it must be, see
//! [`super::writer`]), that lateness would show up as ~1 ms of gateway latency
//! that the gateway never caused. This timer is one thread per worker holding
//! every socket's next deadline in a heap; it sleeps on a condition variable
//! with a nanosecond timeout (timer slack set to 1 µs), and wakes each socket's
//! task through a oneshot channel. `send_lag` still measures whatever lateness
//! is left.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::clock::now_ns;

#[derive(Default)]
struct Queue {
    /// (deadline ns, registration number) → the waiting task's sender.
    heap: BinaryHeap<Reverse<(u64, u64)>>,
    senders: std::collections::HashMap<u64, oneshot::Sender<()>>,
    next_id: u64,
}

#[derive(Clone, Default)]
pub struct PreciseTimer {
    inner: Arc<(Mutex<Queue>, Condvar)>,
}

impl PreciseTimer {
    /// Starts the timer thread (it lives as long as the process).
    pub fn start() -> PreciseTimer {
        let timer = PreciseTimer::default();
        let inner = timer.inner.clone();
        std::thread::Builder::new()
            .name("loadtest-timer".into())
            .spawn(move || run(&inner))
            .expect("cannot start the timer thread");
        timer
    }

    /// Resolves when the shared clock reads `deadline_ns` (at once if past).
    pub async fn at(&self, deadline_ns: u64) {
        if deadline_ns <= now_ns() {
            return;
        }
        let (tx, rx) = oneshot::channel();
        {
            let (lock, cvar) = &*self.inner;
            let mut q = lock.lock().unwrap_or_else(|e| e.into_inner());
            let id = q.next_id;
            q.next_id += 1;
            let earliest = q.heap.peek().is_none_or(|Reverse((d, _))| deadline_ns < *d);
            q.heap.push(Reverse((deadline_ns, id)));
            q.senders.insert(id, tx);
            if earliest {
                cvar.notify_one();
            }
        }
        // A dropped sender cannot happen while the thread runs; either way
        // the caller goes on.
        let _ = rx.await;
    }
}

fn run(inner: &(Mutex<Queue>, Condvar)) {
    // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1_000 as libc::c_ulong);
    }
    let (lock, cvar) = inner;
    let mut q = lock.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let now = now_ns();
        while let Some(&Reverse((deadline, id))) = q.heap.peek() {
            if deadline > now {
                break;
            }
            q.heap.pop();
            if let Some(tx) = q.senders.remove(&id) {
                let _ = tx.send(());
            }
        }
        q = match q.heap.peek() {
            Some(&Reverse((deadline, _))) => {
                let wait = Duration::from_nanos(deadline.saturating_sub(now_ns()));
                cvar.wait_timeout(q, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
            None => cvar.wait(q).unwrap_or_else(|e| e.into_inner()),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wakes_at_the_deadline_in_order() {
        let timer = PreciseTimer::start();
        let t0 = now_ns();
        let (a, b) = tokio::join!(
            async {
                timer.at(t0 + 20_000_000).await;
                now_ns()
            },
            async {
                timer.at(t0 + 10_000_000).await;
                now_ns()
            }
        );
        assert!(a >= t0 + 20_000_000 && b >= t0 + 10_000_000);
        assert!(b < a);
        // Past deadlines resolve at once.
        timer.at(t0).await;
    }
}
