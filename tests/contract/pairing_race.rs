//! A link request confirmed just as it expires. Whichever side wins (the
//! confirm, or the expiry), the pairing web socket ends linked or back at a
//! fresh QR, in bounded time: it is never left on "scanned" with no deadline.

use std::time::Duration;

use futures::future::join_all;

use crate::support::*;

/// Trials run at once, each confirming at a different moment around the
/// request's expiry (3 x `qr_ttl_ms`).
const TRIALS: u64 = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirm_at_the_request_expiry_never_leaves_the_web_stuck() {
    // request ttl 3 s; a ref lives 1 s, time enough to link it on a busy machine
    let gw = TestGateway::spawn(|c| {
        c.qr_ttl_ms = 1000;
        c.qr_rotations = 100;
    })
    .await;
    let outcomes = join_all((0..TRIALS).map(|i| {
        let gw = &gw;
        async move {
            let acc = account("race");
            let phone = gw.phone(&acc).await;
            let (web, qr) = gw.pairing(&PairOpts::new()).await;
            let lr = phone.request_frame(&link_ref(&qr)).await;
            if lr["type"] != "link_request" {
                // the ref rotated before the phone used it: no race to run
                return None;
            }
            web.expect("scanned").await;
            // from 2.7 s to 3.275 s after the scan: around the 3 s expiry
            // (the pace is what this test is about)
            tokio::time::sleep(Duration::from_millis(2700 + i * 25)).await;
            let reply = phone.request_frame(&confirm(&lr)).await;
            let linked = match reply["type"].as_str() {
                Some("device_linked") => {
                    web.expect_within("linked", LONG).await;
                    true
                }
                Some("error") => {
                    assert_eq!(reply["code"], "unknown_request", "{reply}");
                    web.expect_within("pair_rejected", LONG).await;
                    web.expect_within("qr", LONG).await;
                    false
                }
                _ => panic!("link_confirm: {reply}"),
            };
            web.assert_one_reply_per_id();
            Some(linked)
        }
    }))
    .await;
    let ran: Vec<bool> = outcomes.into_iter().flatten().collect();
    assert!(
        ran.len() as u64 >= TRIALS / 2,
        "only {} of {TRIALS} trials got their link in",
        ran.len()
    );
}
