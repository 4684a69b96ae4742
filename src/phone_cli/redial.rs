//! Interactive mode's way back after the gateway went away (a restart's
//! 1012, a dropped connection): jittered exponential backoff, then `auth`
//! with the same token. A close that means "stop here" (logged out, a bad
//! token, replaced by another phone, too slow, rate limited) is not retried.

use std::time::Duration;

use pairgate_client::{Client, ClientError, ConnectOptions};
use pairgate_protocol::ClientFrame;
use serde_json::Value;

use super::failure::Failure;
use super::output::Output;

/// What it takes to open the phone's socket again.
pub(super) struct Redial {
    pub(super) url: String,
    pub(super) opts: ConnectOptions,
    pub(super) token: String,
}

/// Whether the socket ended in a way that dialling again can mend.
pub(super) fn worth_redialling(e: &ClientError) -> bool {
    match e {
        ClientError::Closed(None) | ClientError::Socket(_) => true,
        // Going away, abnormal, server error, restarting, try again later.
        ClientError::Closed(Some(code)) => matches!(code, 1001 | 1006 | 1011 | 1012 | 1013),
        _ => false,
    }
}

/// Waits that double from half a second up to 30 s, each spread by ±30% so
/// that the phones of a restarted gateway do not all come back at one instant.
pub(super) struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(30);

    pub(super) fn new() -> Self {
        Backoff { next: Self::FIRST }
    }

    pub(super) fn delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        base.mul_f64(rand::random_range(0.7..1.3))
    }
}

impl Redial {
    /// Dials until the gateway takes the token again: the new client and its
    /// `ready`. Fails only on an answer that dialling again cannot change.
    pub(super) async fn connect(&self, out: &Output) -> Result<(Client, Value), Failure> {
        let mut backoff = Backoff::new();
        loop {
            let wait = backoff.delay();
            out.note(&format!(
                "connection lost; reconnecting in {:.1} s",
                wait.as_secs_f64()
            ))?;
            tokio::time::sleep(wait).await;
            let mut client = match Client::connect(&self.url, &self.opts).await {
                Ok(c) => c,
                Err(ClientError::Connect(_) | ClientError::Socket(_) | ClientError::Timeout(_)) => {
                    continue;
                }
                Err(e) if worth_redialling(&e) => continue,
                Err(e) => return Err(e.into()),
            };
            let auth = ClientFrame::Auth {
                token: self.token.clone(),
            };
            match client.request(auth).await {
                Ok(ready) => return Ok((client, ready)),
                // A cluster node without Redis for now: later may work.
                Err(ClientError::Reply { code, .. }) if code == "unavailable" => continue,
                Err(ClientError::Timeout(_)) => continue,
                Err(e) if worth_redialling(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_with_jitter_up_to_thirty_seconds() {
        let mut b = Backoff::new();
        let waits: Vec<Duration> = (0..12).map(|_| b.delay()).collect();
        assert!(waits[0] >= Duration::from_millis(350) && waits[0] <= Duration::from_millis(650));
        assert!(waits[1] >= Duration::from_millis(700) && waits[1] <= Duration::from_millis(1300));
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(39)));
        assert!(waits[11] >= Duration::from_secs(21), "{waits:?}");
    }

    #[test]
    fn only_closes_that_a_new_dial_can_mend_are_retried() {
        for code in [1001, 1006, 1012] {
            assert!(worth_redialling(&ClientError::Closed(Some(code))));
        }
        assert!(worth_redialling(&ClientError::Closed(None)));
        for code in [4001, 4003, 4008, 4009, 4029, 4030, 1000, 1002] {
            assert!(
                !worth_redialling(&ClientError::Closed(Some(code))),
                "{code}"
            );
        }
    }
}
