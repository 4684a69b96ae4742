//! "Version 1.1 additions", "Cluster mode": every row of the contract holds
//! as if all sockets were on one gateway, with the sockets spread over the
//! nodes; node deaths (`kill -9`) are noticed within 2 x `node_lease_ms`;
//! sessions and their endings survive every node's and Redis's restart;
//! with Redis unreachable, `/readyz` is 503 and what needs Redis answers
//! `unavailable`, and the same sockets work again once Redis is back.
//!
//! Each test starts its own Redis and nodes (`support/cluster.rs`, the built
//! binary). Sockets are put on given nodes with `c.on(i)` (node `i`, 0-based,
//! id `node-{i+1}`), so that each row is checked across nodes on purpose.
//! Leases are short (`LEASE_MS`), every wait has a deadline.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::support::*;

/// `--node-lease-ms` of the tests that kill nodes.
const LEASE_MS: u64 = 1000;

/// Within how long a dead node's sockets must count as gone: 2 x the lease
/// (the contract) plus 1 s for this test's own reading of the event.
fn dead_within(c: &Cluster) -> Duration {
    c.lease() * 2 + Duration::from_secs(1)
}

async fn three_nodes() -> Cluster {
    Cluster::start(3, LEASE_MS, &[]).await
}

/// Moves session `s` onto a raw socket on node `i` (which reads only when
/// told to, so the order of what it got can be read off it), with the phone
/// told offline then online.
async fn raw_on(c: &Cluster, i: usize, phone: &Client, s: &Session) -> RawWs {
    raw_session(c.node_addr(i), phone, s).await
}

/// `token` gets `logged_out` and 4001 through every live node.
async fn assert_logged_out_everywhere(c: &Cluster, token: &str) {
    for i in 0..c.len() {
        if c.is_up(i) {
            c.on(i).assert_logged_out(token).await;
        }
    }
}

/// The `online` of `session_id` in the phone's `list_sessions`.
async fn listed_online(phone: &Client, session_id: &str) -> Value {
    let list = list_sessions(phone).await;
    list.iter()
        .find(|s| s["session_id"] == session_id)
        .unwrap_or_else(|| panic!("{session_id} not listed: {list:?}"))["online"]
        .clone()
}

/// After a restart: each `kept` session resumes (through a node other than
/// the first), each `ended` one gets 4001 on every node, and the phone of
/// `account` lists exactly `kept`.
async fn assert_kept_and_ended(c: &Cluster, account: &str, kept: &[&Session], ended: &[&Session]) {
    for (i, s) in kept.iter().enumerate() {
        let web = c
            .on((i + 1) % c.len())
            .resume_ok(&s.token, &s.session_id)
            .await;
        web.close().await;
    }
    for s in ended {
        assert_logged_out_everywhere(c, &s.token).await;
    }
    let phone = c.on(2).phone(account).await;
    let want: Vec<String> = kept.iter().map(|s| s.session_id.clone()).collect();
    assert_eq!(session_ids(&list_sessions(&phone).await), want);
}

/// What is left until `deadline` (zero once past).
fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// `send` of `body` from `from` until it is acked (an `error` `unavailable`
/// meanwhile is fine: then nothing was done), by `deadline`.
async fn send_until_acked(
    from: &Client,
    body: &Value,
    to: Option<&str>,
    deadline: Instant,
) -> Value {
    loop {
        let r = from.send_body(body, to).await;
        if r["type"] == "ack" {
            return r;
        }
        assert!(
            r["type"] == "error" && r["code"] == "unavailable",
            "{}: a send while Redis comes back is acked or unavailable, got {r}",
            from.name
        );
        assert!(
            Instant::now() < deadline,
            "{}: sends still unavailable after the deadline: {r}",
            from.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------
// pairing, relay, replacement, limits across nodes

/// A QR shown through node 1 is linked by a phone on node 2, by ref and by
/// code; the web's `scanned`, `linked` and `phone_status` cross nodes, and
/// the token then resumes through node 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qr_shown_through_one_node_is_linked_by_a_phone_on_another() {
    let c = three_nodes().await;
    let acc = account("cl-link");
    let phone = c.on(1).phone(&acc).await;

    for by_code in [false, true] {
        let (web, qr) = c.on(0).pairing(&PairOpts::new()).await;
        let link = if by_code {
            link_code(&qr)
        } else {
            link_ref(&qr)
        };
        let lr = phone.request_frame(&link).await;
        assert_eq!(lr["type"], "link_request", "by_code={by_code}: {lr}");
        assert_eq!(lr["device"]["name"], "Chrome on Linux", "{lr}");
        web.expect("scanned").await;
        let dl = phone.request_frame(&confirm(&lr)).await;
        assert_eq!(dl["type"], "device_linked", "{dl}");
        assert_session_shape(&dl["session"]);
        let linked = web.expect_rx("linked").await;
        let st = web.expect_after(&linked, "phone_status").await;
        assert_eq!(st["online"], true, "{st}");
        assert_eq!(linked.msg["account"], acc.as_str());
        assert_eq!(linked.msg["session_id"], dl["session"]["session_id"]);

        let token = linked.msg["token"].as_str().unwrap().to_string();
        let sid = linked.msg["session_id"].as_str().unwrap().to_string();
        web.close().await;
        phone
            .expect_field("session_offline", "session_id", &json!(sid))
            .await;
        let again = c.on(2).resume_ok(&token, &sid).await;
        phone
            .expect_field("session_online", "session_id", &json!(sid))
            .await;
        again.close().await;
    }
    assert_eq!(list_sessions(&phone).await.len(), 2);
}

/// Relay both ways with the phone on node 1 and its webs on nodes 2 and 3:
/// `delivered` counts the web on every node; `to` reaches one; a web's send
/// reaches the phone; a closed web is no longer counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_both_ways_counts_webs_on_every_node() {
    let c = three_nodes().await;
    let acc = account("cl-relay");
    // round-robin: phone, then a web on each of the two other nodes
    let phone = c.phone(&acc).await;
    let a = c.pair(&phone, &PairOpts::new()).await;
    let b = c.pair(&phone, &PairOpts::new()).await;

    let ack = phone.send_body(&json!({"to": "all"}), None).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["delivered"], 2, "{ack}");
    for web in [&a.web, &b.web] {
        let m = web.expect("message").await;
        assert_eq!(m["from"], "phone", "{m}");
        assert_eq!(m["body"], json!({"to": "all"}), "{m}");
    }

    let ack = phone.send_body(&json!("just b"), Some(&b.session_id)).await;
    assert_eq!(ack["delivered"], 1, "{ack}");
    assert_eq!(b.web.expect("message").await["body"], "just b");
    a.web.assert_quiet("message").await;

    for s in [&a, &b] {
        let ack = s.web.send_body(&json!({"from": s.session_id}), None).await;
        assert_eq!(ack["type"], "ack", "{ack}");
        let m = phone
            .expect_field("message", "from", &json!(s.session_id))
            .await;
        assert_eq!(m["body"], json!({"from": s.session_id}), "{m}");
    }

    // list_sessions: online counts a socket on any node
    let list = list_sessions(&phone).await;
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(list.iter().all(|s| s["online"] == true), "{list:?}");

    a.web.close().await;
    phone
        .expect_field("session_offline", "session_id", &json!(a.session_id))
        .await;
    assert_eq!(listed_online(&phone, &a.session_id).await, false);
    let ack = phone.send_body(&json!("after a left"), None).await;
    assert_eq!(ack["delivered"], 1, "{ack}");
    let ack = phone.send_body(&json!("to a"), Some(&a.session_id)).await;
    assert_eq!(ack["delivered"], 0, "{ack}");
    // what went between the nodes is counted on both ends
    for i in 0..3 {
        for series in [
            "pairgate_cluster_bus_published_total",
            "pairgate_cluster_bus_received_total",
        ] {
            let n = metric_now(c.node_addr(i), series).await;
            assert!(n > 0.0, "node {i}: {series} is {n}");
        }
    }
}

/// 200 pipelined messages each way between a phone and a web on different
/// nodes arrive in the order sent, every one acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_pair_order_of_200_messages_across_nodes() {
    let c = three_nodes().await;
    let acc = account("cl-order");
    let phone = c.on(0).phone(&acc).await;
    let s = c.on(1).pair(&phone, &PairOpts::new()).await;
    let n = 200;

    let ids: Vec<String> = (0..n).map(|i| format!("p{i}")).collect();
    phone
        .send_many(ids.iter().enumerate().map(
            |(i, id)| json!({"type": "send", "id": id, "body": {"seq": i}, "to": s.session_id}),
        ))
        .await;
    let ids_w: Vec<String> = (0..n).map(|i| format!("w{i}")).collect();
    s.web
        .send_many(
            ids_w
                .iter()
                .enumerate()
                .map(|(i, id)| json!({"type": "send", "id": id, "body": {"seq": i}})),
        )
        .await;

    for i in 0..n {
        let m = s.web.expect("message").await;
        assert_eq!(m["body"]["seq"], i, "phone -> web out of order: {m}");
        let m = phone.expect("message").await;
        assert_eq!(m["from"], s.session_id.as_str(), "{m}");
        assert_eq!(m["body"]["seq"], i, "web -> phone out of order: {m}");
    }
    for id in &ids {
        let ack = phone.expect_id(id).await;
        assert_eq!(ack["type"], "ack", "{ack}");
        assert_eq!(ack["delivered"], 1, "{ack}");
    }
    for id in &ids_w {
        assert_eq!(s.web.expect_id(id).await["type"], "ack");
    }
    phone.assert_one_reply_per_id();
    s.web.assert_one_reply_per_id();
}

/// A second phone socket on another node replaces the first (4009); the
/// webs see no `phone_status` change, and relay goes on through the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_is_replaced_from_another_node() {
    let c = three_nodes().await;
    let acc = account("cl-phone4009");
    let old = c.on(0).phone(&acc).await;
    let s = c.on(1).pair(&old, &PairOpts::new()).await;

    let new = c.on(2).phone(&acc).await;
    assert_eq!(old.expect_close().await, 4009, "the replaced phone");
    let ack = new.send_body(&json!("from the new phone"), None).await;
    assert_eq!(ack["delivered"], 1, "{ack}");
    assert_eq!(s.web.expect("message").await["body"], "from the new phone");
    s.web.send_body(&json!("to the new phone"), None).await;
    new.expect_field("message", "from", &json!(s.session_id))
        .await;
    s.web.assert_quiet("phone_status").await;
}

/// A session resumed through another node replaces its older socket (4009),
/// with no `session_offline`/`session_online` to the phone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_session_is_replaced_from_another_node() {
    let c = three_nodes().await;
    let acc = account("cl-web4009");
    let phone = c.on(0).phone(&acc).await;
    let s = c.on(1).pair(&phone, &PairOpts::new()).await;

    let newer = c.on(2).resume_ok(&s.token, &s.session_id).await;
    assert_eq!(s.web.expect_close().await, 4009, "the replaced web socket");
    let ack = phone
        .send_body(&json!("one socket"), Some(&s.session_id))
        .await;
    assert_eq!(ack["delivered"], 1, "{ack}");
    assert_eq!(newer.expect("message").await["body"], "one socket");
    assert_eq!(listed_online(&phone, &s.session_id).await, true);
    phone.assert_quiet("session_offline").await;
    phone.assert_none("session_online");
}

/// `max_devices` counts the sessions linked through every node: with 2, a
/// third `link` (QR on a third node) is `too_many_devices`, the web is not
/// told `scanned`, and the ref stays valid until a session is logged out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_devices_counts_sessions_on_every_node() {
    let c = Cluster::start(3, LEASE_MS, &["--max-devices", "2"]).await;
    let acc = account("cl-max");
    let phone = c.on(0).phone(&acc).await;
    let first = c.on(1).pair(&phone, &PairOpts::new()).await;
    let _second = c.on(2).pair(&phone, &PairOpts::new()).await;

    let (web, qr) = c.on(1).pairing(&PairOpts::new()).await;
    phone
        .request_frame_error(&link_ref(&qr), "too_many_devices")
        .await;
    // a phone socket on another node is refused too
    let phone = c.on(2).phone(&acc).await;
    phone
        .request_frame_error(&link_code(&qr), "too_many_devices")
        .await;
    web.assert_quiet("scanned").await;

    let ok = phone.request_frame(&logout(&first.session_id)).await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let lr = phone.request_frame(&link_ref(&qr)).await;
    assert_eq!(lr["type"], "link_request", "{lr}");
    web.expect("scanned").await;
}

// ---------------------------------------------------------------------------
// logout across nodes

/// `logout` and `logout_all` with sessions on all three nodes: each web
/// socket, whatever its node, reads `logged_out` and its 4001 close before
/// it could answer a ping sent once the phone had its `ok` (the order read
/// off the web's own connection, as `sessions.rs` does on one node); the
/// tokens are then refused 4001 through every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_and_logout_all_tear_down_webs_on_every_node_before_ok() {
    let c = three_nodes().await;
    let acc = account("cl-logout");
    let phone = c.on(0).phone(&acc).await;
    let mut sessions = Vec::new();
    for _ in 0..4 {
        sessions.push(c.on(0).pair(&phone, &PairOpts::new()).await);
    }
    // one session's socket per node (the fourth stays offline)
    let mut webs = Vec::new();
    for (i, s) in sessions.iter().take(3).enumerate() {
        webs.push(raw_on(&c, i, &phone, s).await);
    }
    let off = &sessions[3];
    off.web.close().await;
    phone
        .expect_field("session_offline", "session_id", &json!(off.session_id))
        .await;
    // another account, on every node, is untouched
    let other_phone = c.on(1).phone(&account("cl-logout-other")).await;
    let theirs = c.on(2).pair(&other_phone, &PairOpts::new()).await;

    // logout of the session on node 2 (the phone is on node 1)
    let target = &sessions[1];
    phone
        .send_frame(&logout(&target.session_id), Some("lo"))
        .await;
    let ok = phone.expect_id("lo").await;
    ping_after_ok(&mut [&mut webs[1]]).await;
    assert_eq!(ok["type"], "ok", "{ok}");
    assert_eq!(ok["closed"], 1, "{ok}");
    assert_torn_down_before(&mut webs[1], "phone_logout").await;
    assert_logged_out_everywhere(&c, &target.token).await;

    // logout_all: the sessions on nodes 1 and 3 and the offline one
    phone.send_frame(&ClientFrame::LogoutAll, Some("la")).await;
    let ok = phone.expect_id("la").await;
    {
        let (w0, rest) = webs.split_at_mut(1);
        ping_after_ok(&mut [&mut w0[0], &mut rest[1]]).await;
    }
    assert_eq!(ok["type"], "ok", "{ok}");
    assert_eq!(ok["closed"], 3, "{ok}");
    for i in [0, 2] {
        assert_torn_down_before(&mut webs[i], "phone_logout_all").await;
    }
    for s in &sessions {
        assert_logged_out_everywhere(&c, &s.token).await;
    }
    assert!(list_sessions(&phone).await.is_empty());
    phone.assert_quiet("session_removed").await;
    phone.assert_none("session_offline");

    assert!(!theirs.web.is_closed());
    let ack = other_phone.send_body(&json!("still here"), None).await;
    assert_eq!(ack["delivered"], 1, "{ack}");
    let _ = c.on(0).resume_ok(&theirs.token, &theirs.session_id).await;
}

// ---------------------------------------------------------------------------
// node deaths

/// `kill -9` of the phone's node: the webs on the other nodes get
/// `phone_status` `{"online":false}` within 2 x lease; the phone reconnects
/// through another node, the webs get `{"online":true}`, relay goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_the_phones_node() {
    let mut c = three_nodes().await;
    let acc = account("cl-phone-dies");
    let phone = c.on(0).phone(&acc).await;
    let a = c.on(1).pair(&phone, &PairOpts::new()).await;
    let b = c.on(2).pair(&phone, &PairOpts::new()).await;

    c.kill9(0).await;
    let within = dead_within(&c);
    for web in [&a.web, &b.web] {
        let st = web.expect_within("phone_status", within).await;
        assert_eq!(st["online"], false, "{}: {st}", web.name);
    }
    phone.wait_closed().await;
    // while the phone is away
    a.web
        .request_frame_error(
            &ClientFrame::Send {
                body: &serde_json::value::to_raw_value(&json!("anyone?")).unwrap(),
                to: None,
            },
            "phone_offline",
        )
        .await;

    let phone = c.on(1).phone(&acc).await;
    for web in [&a.web, &b.web] {
        let st = web.expect("phone_status").await;
        assert_eq!(st["online"], true, "{}: {st}", web.name);
    }
    let ack = phone.send_body(&json!("back"), None).await;
    assert_eq!(ack["delivered"], 2, "{ack}");
    for web in [&a.web, &b.web] {
        assert_eq!(web.expect("message").await["body"], "back");
    }
}

/// `kill -9` of the phone's node and its restart under the same `--node-id`
/// at once: the other nodes still see the old process die (its webs' phone
/// goes offline within 2 x lease), and the phone back on the restarted node
/// is online for them again, with relay both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_under_the_same_id_is_not_taken_for_the_dead_one() {
    let mut c = three_nodes().await;
    let acc = account("cl-same-id");
    let phone = c.on(0).phone(&acc).await;
    let a = c.on(1).pair(&phone, &PairOpts::new()).await;

    c.kill9(0).await;
    c.restart(0).await;
    let st = a.web.expect_within("phone_status", dead_within(&c)).await;
    assert_eq!(st["online"], false, "{st}");
    phone.wait_closed().await;

    let phone = c.on(0).phone(&acc).await;
    let st = a.web.expect("phone_status").await;
    assert_eq!(st["online"], true, "{st}");
    let ack = phone.send_body(&json!("again"), None).await;
    assert_eq!(ack["delivered"], 1, "{ack}");
    assert_eq!(a.web.expect("message").await["body"], "again");
    let ack = a.web.send_body(&json!("back"), None).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(phone.expect("message").await["body"], "back");
}

/// `kill -9` of a web's node: the phone (elsewhere) gets `session_offline`
/// within 2 x lease and `list_sessions` shows it offline; the web resumes at
/// once through another node (`session_online`), and relay reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_a_webs_node() {
    let mut c = three_nodes().await;
    let acc = account("cl-web-dies");
    let phone = c.on(0).phone(&acc).await;
    let a = c.on(1).pair(&phone, &PairOpts::new()).await;
    let b = c.on(2).pair(&phone, &PairOpts::new()).await;

    c.kill9(1).await;
    let within = dead_within(&c);
    let off = phone
        .expect_where("session_offline of a", within, |m| {
            m["type"] == "session_offline" && m["session_id"] == a.session_id.as_str()
        })
        .await
        .msg;
    assert_no_id(&off);
    assert_eq!(listed_online(&phone, &a.session_id).await, false);
    assert_eq!(listed_online(&phone, &b.session_id).await, true);
    let ack = phone.send_body(&json!("who is there"), None).await;
    assert_eq!(ack["delivered"], 1, "{ack}");
    assert_eq!(b.web.expect("message").await["body"], "who is there");

    let a_again = c.on(2).resume_ok(&a.token, &a.session_id).await;
    phone
        .expect_field("session_online", "session_id", &json!(a.session_id))
        .await;
    assert_eq!(listed_online(&phone, &a.session_id).await, true);
    let ack = phone
        .send_body(&json!("welcome back"), Some(&a.session_id))
        .await;
    assert_eq!(ack["delivered"], 1, "{ack}");
    assert_eq!(a_again.expect("message").await["body"], "welcome back");
    // the phone hears of no other session going
    phone.assert_quiet("session_removed").await;
}

/// `kill -9` of the node that is home to many accounts while their webs on
/// the other nodes have sends waiting on it: every web still gets
/// `phone_status` `{"online":false}` within 2 x lease, and its next send
/// answers `phone_offline` (its socket is registered with the new home),
/// never `logged_out`. The waiting sends, woken by the death, used to re-home
/// their accounts before the node listed the dead node's accounts, so those
/// accounts' sockets on it were never registered anew (found by
/// `loadtest chaos --kill node`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_a_home_with_sends_waiting_on_it_keeps_every_web_registered() {
    let mut c = three_nodes().await;
    let mut phones = Vec::new();
    let mut webs = Vec::new();
    for k in 0..8 {
        let acc = account(&format!("cl-home-busy-{k}"));
        let phone = c.on(0).phone(&acc).await;
        webs.push(c.on(1 + k % 2).pair(&phone, &PairOpts::new()).await);
        phones.push(phone);
    }

    c.kill9(0).await;
    let body = serde_json::value::to_raw_value(&json!("anyone?")).unwrap();
    let send = ClientFrame::Send {
        body: &body,
        to: None,
    };
    // calls to the dead home, waiting until it is declared dead
    for s in &webs {
        for i in 0..4 {
            s.web.send_frame(&send, Some(&format!("waiting-{i}"))).await;
        }
    }
    let within = dead_within(&c);
    for s in &webs {
        let st = s.web.expect_within("phone_status", within).await;
        assert_eq!(st["online"], false, "{}: {st}", s.web.name);
    }
    for s in &webs {
        s.web.request_frame_error(&send, "phone_offline").await;
    }
    drop(phones);
}

/// A node that shuts down cleanly (SIGTERM) announces its sockets gone at
/// once: with a long lease, the phone still gets `session_offline` promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_cleanly_announces_its_sockets_gone_at_once() {
    let mut c = Cluster::start(2, 60_000, &[]).await;
    let acc = account("cl-sigterm");
    let phone = c.on(0).phone(&acc).await;
    let s = c.on(1).pair(&phone, &PairOpts::new()).await;

    let status = c.terminate(1).await;
    assert!(
        status.success(),
        "node-2 exit status after SIGTERM: {status}"
    );
    assert_eq!(s.web.expect_close().await, 1012);
    phone
        .expect_field("session_offline", "session_id", &json!(s.session_id))
        .await;
    assert_eq!(listed_online(&phone, &s.session_id).await, false);
}

/// Every node killed (`kill -9`) and restarted: a live session's token
/// resumes, ended ones (phone logout, self-logout) get 4001, through every
/// node; the phone lists the live one only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_killed_and_restarted_keeps_sessions_and_endings() {
    let mut c = three_nodes().await;
    let acc = account("cl-allkill");
    let phone = c.on(0).phone(&acc).await;
    let live = c.on(1).pair(&phone, &PairOpts::new()).await;
    let ended = c.on(2).pair(&phone, &PairOpts::new()).await;
    let selfout = c.on(0).pair(&phone, &PairOpts::new()).await;
    let lo = selfout.web.request(json!({"type": "logout"})).await;
    assert_eq!(lo["type"], "logged_out", "{lo}");
    let ok = phone.request_frame(&logout(&ended.session_id)).await;
    assert_eq!(ok["type"], "ok", "{ok}");
    // a link acknowledged right before the kill
    let last = c.on(2).pair(&phone, &PairOpts::new()).await;

    for i in 0..3 {
        c.kill9(i).await;
    }
    for i in 0..3 {
        c.restart(i).await;
    }

    assert_kept_and_ended(&c, &acc, &[&live, &last], &[&ended, &selfout]).await;
}

// ---------------------------------------------------------------------------
// Redis restarts and outages

/// `kill -9` of Redis right after acknowledgements, then Redis restarted on
/// its AOF: nothing acknowledged is lost (links resume, endings are 4001),
/// and every node is ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_kill9_and_restart_loses_nothing_acknowledged() {
    kill9_and_restart_loses_nothing_acknowledged(three_nodes().await).await;
}

/// The same on a Redis Cluster: every master `kill -9`ed right after the
/// acknowledgements and restarted on its AOF. The masters die one after the
/// other, so a node's cluster client may read the slot map from one that is
/// about to die and be left with no connection at all: that node opens a
/// new one from the seed nodes (`src/cluster/reopening.rs`) and is ready
/// again with the cluster, not stuck not ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_kill9_of_every_master_loses_nothing_acknowledged() {
    let c = Cluster::start_on_redis_cluster(3, LEASE_MS, &[]).await;
    kill9_and_restart_loses_nothing_acknowledged(c).await;
}

/// Every master of a Redis Cluster down and kept down: the node says not
/// ready and keeps trying to reconnect, each attempt counted
/// (`pairgate_cluster_redis_reconnects_total`), never more often than its
/// backoff allows: one attempt per 100 ms at most on the commands'
/// connection and one per 250 ms on the bus subscriber's, where a reconnect
/// loop without a pause counts thousands. The masters back, the node is
/// ready again and links.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_outage_reconnect_attempts_are_bounded() {
    const RECONNECTS: &str = "pairgate_cluster_redis_reconnects_total";
    let mut c = Cluster::start_on_redis_cluster(1, LEASE_MS, &[]).await;
    let addr = c.node_addr(0);
    assert_eq!(metric_now(addr, RECONNECTS).await, 0.0);

    c.redis.kill9().await;
    wait_readyz(addr, 503, LONG).await;
    let since = Instant::now();
    let before = metric_now(addr, RECONNECTS).await;
    // it keeps trying ...
    let after = wait_for_metric(addr, RECONNECTS, LONG, |n| n >= before + 4.0).await;
    // ... within the backoff: every attempt counted by `after` began within
    // `since`'s window or just before it (one of each kind in flight)
    let window = since.elapsed().as_millis() as f64;
    let bound = (window / 100.0 + 1.0) + (window / 250.0 + 1.0);
    assert!(
        after - before <= bound,
        "{} reconnect attempts in {window} ms (at most {bound})",
        after - before
    );
    assert_eq!(c.readyz(0).await, Some(503));

    c.redis.restart().await;
    wait_readyz(addr, 200, LONG).await;
    let phone = c.on(0).phone(&account("cl-rcluster-back")).await;
    let s = c.on(0).pair(&phone, &PairOpts::new()).await;
    let ack = phone.send_body(&json!("back"), None).await;
    assert_eq!(ack["delivered"], 1, "{ack}");
    assert_eq!(s.web.expect("message").await["body"], "back");
}

async fn kill9_and_restart_loses_nothing_acknowledged(mut c: Cluster) {
    let acc = account("cl-redis-kill");
    let phone = c.on(0).phone(&acc).await;
    let live = c.on(1).pair(&phone, &PairOpts::new()).await;
    let ended = c.on(2).pair(&phone, &PairOpts::new()).await;
    let acc2 = account("cl-redis-kill-all");
    let phone2 = c.on(1).phone(&acc2).await;
    let all1 = c.on(2).pair(&phone2, &PairOpts::new()).await;
    let all2 = c.on(0).pair(&phone2, &PairOpts::new()).await;
    let ok = phone2.request_frame(&ClientFrame::LogoutAll).await;
    assert_eq!(ok["closed"], 2, "{ok}");
    let last = c.on(1).pair(&phone, &PairOpts::new()).await;
    let ok = phone.request_frame(&logout(&ended.session_id)).await;
    assert_eq!(ok["type"], "ok", "{ok}");
    // right after the ok
    let killed = Instant::now();
    c.redis.kill9().await;
    c.redis.restart().await;
    let back = killed.elapsed();
    for i in 0..3 {
        wait_readyz(c.node_addr(i), 200, LONG).await;
    }
    eprintln!(
        "Redis killed and restarted: answering after {back:?}, every node ready after {:?}",
        killed.elapsed()
    );

    assert_kept_and_ended(&c, &acc, &[&live, &last], &[&ended, &all1, &all2]).await;
}

/// `kill -9` of Redis and its restart at once while a phone keeps sending
/// to webs on two other nodes: the sockets stay open, and every `ack` counts
/// only deliveries that arrive (`delivered` N: N webs got that message).
/// It failed in 3 of 6 runs when a delivery to another node counted once
/// queued for the bus (a message acked `delivered` 2 some 150 ms after the
/// kill reached neither web), and the resync closed web sockets 1012 when
/// their home could not answer yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_while_relaying_loses_no_acknowledged_delivery() {
    let mut c = three_nodes().await;
    let acc = account("cl-redis-relay");
    let phone = c.on(0).phone(&acc).await;
    let webs = [
        c.on(1).pair(&phone, &PairOpts::new()).await,
        c.on(2).pair(&phone, &PairOpts::new()).await,
    ];
    // (body, delivered) of every acked send, with the restart after the 100th
    let mut acked = Vec::new();
    for i in 0..400u64 {
        if i == 100 {
            c.redis.kill9().await;
            c.redis.restart().await;
        }
        let r = phone.send_body(&json!(i), None).await;
        if r["type"] == "ack" {
            acked.push((i, r["delivered"].as_u64().unwrap_or(0)));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // a last message both webs get: everything sent before it has arrived
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = send_until_acked(&phone, &json!("end"), None, deadline).await;
        if r["delivered"] == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the end marker never reached both webs: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for s in &webs {
        s.web
            .expect_where("the end marker", LONG, |m| {
                m["type"] == "message" && m["body"] == "end"
            })
            .await;
        assert!(!s.web.is_closed(), "{} was closed", s.web.name);
    }
    for (i, delivered) in acked {
        let got = webs
            .iter()
            .filter(|s| s.web.all_of("message").iter().any(|m| m["body"] == i))
            .count() as u64;
        assert_eq!(
            got, delivered,
            "message {i}: acked delivered {delivered}, received by {got}"
        );
    }
}

/// Three nodes as the flood tests of backpressure.rs need them: their
/// queue bound, and rates high enough that only the queue limits a flood.
async fn flood_nodes() -> Cluster {
    let max_queue = crate::backpressure::FLOOD_MAX_QUEUE.to_string();
    let high = "100000";
    Cluster::start(
        3,
        LEASE_MS,
        &[
            "--max-queue-bytes",
            &max_queue,
            "--max-frames-per-sec",
            high,
            "--max-errors-per-sec",
            high,
        ],
    )
    .await
}

/// A web socket that stops reading on another node than its phone's (and
/// its account's home): what is held for it stays bounded, it is closed
/// 4030, and the phone's `delivered` counts it only for what its node's
/// queue took: a delivery its full queue refused is not counted merely
/// because Redis handed the packet to its node. Once it reads again it gets exactly
/// what was counted for it, in order, then the 4030.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_that_stops_reading_on_another_node_is_counted_only_for_what_it_took() {
    let c = flood_nodes().await;
    let acc = account("cl-flood");
    let phone = c.on(0).phone(&acc).await;
    let fast = c.on(1).pair(&phone, &PairOpts::new()).await;
    let slow = c.on(2).pair(&phone, &PairOpts::new()).await;
    slow.web.close().await;
    let raw = raw_resume(c.node_addr(2), &slow.token, Some(4096)).await;
    crate::backpressure::flood_while_one_web_stops_reading(&phone, &fast, raw).await;
}

/// A phone that stops reading on a third node, flooded by a web on another
/// (the account's home is the first node): the web's sends are acknowledged
/// only while the phone's node says its queue took them, then answered
/// `phone_offline` (its queue was full, so it is closed 4030), as on one
/// node; the phone gets exactly what was acknowledged, then its 4030.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_that_stops_reading_on_a_third_node_is_acked_only_for_what_it_took() {
    let c = flood_nodes().await;
    let acc = account("cl-floodphone");
    let phone = c.on(0).phone(&acc).await;
    let s = c.on(1).pair(&phone, &PairOpts::new()).await;
    phone.close().await;
    assert_eq!(s.web.expect("phone_status").await["online"], false);
    let raw = raw_phone(c.node_addr(2), &c.phone_token(&acc), Some(4096)).await;
    assert_eq!(s.web.expect("phone_status").await["online"], true);
    crate::backpressure::flood_a_phone_that_stops_reading(&s.web, raw).await;
}

/// Redis stopped and started again four times in a row, the phone on one
/// node and webs on all three: after each outage every node starts over
/// under a new name at once, so the account's home moves while sockets
/// register with it anew from every side. After each, a send reaches every
/// web, each web's last `phone_status` says online, and every send reached
/// exactly the webs its `ack` counted. It caught a socket dropped from its
/// node's table when one try to register failed (the home's deliveries to it
/// then counted and lost) and a web told `online: false` after `true` (its
/// node sent the state from the call's answer after the home's later event).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_again_and_again_every_socket_registers_anew() {
    let mut c = three_nodes().await;
    let acc = account("cl-redis-again");
    let phone = c.on(0).phone(&acc).await;
    let webs = [
        c.on(0).pair(&phone, &PairOpts::new()).await,
        c.on(1).pair(&phone, &PairOpts::new()).await,
        c.on(2).pair(&phone, &PairOpts::new()).await,
        c.on(1).pair(&phone, &PairOpts::new()).await,
    ];
    let mut acked = Vec::new();
    for round in 0..4 {
        c.redis.stop().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        for i in 0..3 {
            wait_readyz(c.node_addr(i), 503, left(deadline)).await;
        }
        c.redis.restart().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        for i in 0..3 {
            wait_readyz(c.node_addr(i), 200, left(deadline)).await;
        }
        // Ready does not mean every other node has registered its sockets
        // with their new homes yet: sent again until all four count.
        let mut attempt = 0;
        let body = loop {
            let body = json!(format!("round {round} try {attempt}"));
            let ack = send_until_acked(&phone, &body, None, deadline).await;
            let delivered = ack["delivered"].as_u64().unwrap_or(0);
            acked.push((body.clone(), delivered));
            if delivered == webs.len() as u64 {
                break body;
            }
            assert!(Instant::now() < deadline, "round {round}: {ack}");
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        for s in &webs {
            s.web
                .expect_where("this round's message", LONG, |m| {
                    m["type"] == "message" && m["body"] == body
                })
                .await;
            let last = s.web.all_of("phone_status").last().cloned();
            assert_eq!(
                last.as_ref().map(|m| m["online"].clone()),
                Some(json!(true)),
                "round {round}: {} last heard {last:?}",
                s.web.name
            );
            assert!(!s.web.is_closed(), "{} was closed", s.web.name);
        }
    }
    for (body, delivered) in acked {
        let got = webs
            .iter()
            .filter(|s| s.web.all_of("message").iter().any(|m| m["body"] == body))
            .count() as u64;
        assert_eq!(
            got, delivered,
            "{body}: acked delivered {delivered}, received by {got}"
        );
    }
}

/// Redis stopped: every node's `/readyz` is 503 within 5 s; upgrades are
/// still accepted; `auth` (phone and web), `pair`, `link` by code and a cross-node `send`
/// (both ways) answer `error` `unavailable`, never a false `ack`, and nothing
/// refused is delivered. Redis back: `/readyz` 200 and the same sockets (no
/// reconnect) relay across nodes again within 10 s, with `phone_status` true.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_answers_unavailable_and_the_same_sockets_recover() {
    let mut c = three_nodes().await;
    let acc = account("cl-redis-down");
    let phone = c.on(0).phone(&acc).await;
    let far = c.on(1).pair(&phone, &PairOpts::new()).await;
    let near = c.on(0).pair(&phone, &PairOpts::new()).await;
    let spare = c.on(2).pair(&phone, &PairOpts::new()).await;
    spare.web.close().await;
    phone
        .expect_field("session_offline", "session_id", &json!(spare.session_id))
        .await;

    c.redis.stop().await;
    let down = Instant::now() + Duration::from_secs(5);
    for i in 0..3 {
        wait_readyz(c.node_addr(i), 503, left(down)).await;
    }
    // /healthz stays 200
    assert_eq!(c.on(1).http_get("/healthz", &[]).await.status, 200);

    // upgrades are accepted; what needs Redis is unavailable
    let other = account("cl-redis-down-new");
    let new_phone = Client::open(&c.on(1).ws_url("/ws/phone")).await;
    new_phone.expect("hello").await;
    new_phone
        .request_frame_error(&auth(&c.phone_token(&other)), "unavailable")
        .await;
    let (_w, reply) = c.on(2).resume(&spare.token).await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], "unavailable", "{reply}");
    let web = c.on(2).web(Some(CHROME_LINUX_UA)).await;
    web.request_frame_error(&PairOpts::new().pair_frame(), "unavailable")
        .await;
    // a link by code (counted cluster-wide in Redis) is unavailable, not
    // let through uncounted
    phone
        .request_error(json!({"type": "link", "code": "ZZZZ-ZZZZ"}), "unavailable")
        .await;

    // cross-node sends, both ways: unavailable, and not delivered
    let refused_body = json!("refused");
    let body = serde_json::value::to_raw_value(&refused_body).unwrap();
    phone
        .request_frame_error(
            &ClientFrame::Send {
                body: &body,
                to: Some(far.session_id.clone()),
            },
            "unavailable",
        )
        .await;
    far.web
        .request_frame_error(
            &ClientFrame::Send {
                body: &body,
                to: None,
            },
            "unavailable",
        )
        .await;

    c.redis.restart().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in 0..3 {
        wait_readyz(c.node_addr(i), 200, left(deadline)).await;
    }
    // Within the 10 s relay to the web on the other node works again. Every
    // node being ready does not mean every other node has registered its
    // sockets with their new homes yet: a send acked meanwhile counts that
    // web out (delivered 0, never received) and is sent again.
    let ack = loop {
        let ack =
            send_until_acked(&phone, &json!("p-after"), Some(&far.session_id), deadline).await;
        if ack["delivered"] == 1 || Instant::now() >= deadline {
            break ack;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(ack["delivered"], 1, "{ack}");
    send_until_acked(&far.web, &json!("w-after"), None, deadline).await;

    // what reached whom: the acked messages, never the refused ones
    let m = far.web.expect("message").await;
    assert_eq!(m["body"], "p-after", "{m}");
    let m = phone
        .expect_field("message", "from", &json!(far.session_id))
        .await;
    assert_eq!(m["body"], "w-after", "{m}");
    far.web.assert_quiet("message").await;
    phone.assert_quiet("message").await;
    // no reconnect: the same sockets, still open
    for s in [&phone, &far.web, &near.web] {
        assert!(!s.is_closed(), "{} was closed", s.name);
    }
    // phone_status true to the phone's state (online all along)
    for web in [&far.web, &near.web] {
        if let Some(last) = web.all_of("phone_status").last() {
            assert_eq!(last["online"], true, "{}: {last}", web.name);
        }
    }
    // and what needed Redis works again
    let _spare_web = c.on(2).resume_ok(&spare.token, &spare.session_id).await;
    let ack = phone.send_body(&json!("all"), None).await;
    assert_eq!(
        ack["delivered"],
        3,
        "{ack} {:?}",
        list_sessions(&phone).await
    );
}

/// The same rows on a Redis Cluster (`redis+cluster://` with three
/// masters): a QR on one node linked by a phone on the other, relay both
/// ways, a resume through the other node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_nodes_link_and_relay_across() {
    let c = Cluster::start_on_redis_cluster(2, LEASE_MS, &[]).await;
    let acc = account("cl-rcluster");
    let phone = c.on(0).phone(&acc).await;
    let s = c.on(1).pair(&phone, &PairOpts::new().by_code()).await;
    let ack = phone.send_body(&json!("over the cluster"), None).await;
    assert_eq!(ack["delivered"], 1, "{ack}");
    assert_eq!(s.web.expect("message").await["body"], "over the cluster");
    s.web.send_body(&json!("back"), None).await;
    phone
        .expect_field("message", "from", &json!(s.session_id))
        .await;
    let again = c.on(0).resume_ok(&s.token, &s.session_id).await;
    assert_eq!(s.web.expect_close().await, 4009);
    let ok = phone.request_frame(&logout(&s.session_id)).await;
    assert_eq!(ok["type"], "ok", "{ok}");
    assert_eq!(again.expect_close().await, 4001);
    assert_logged_out_everywhere(&c, &s.token).await;
}

// ---------------------------------------------------------------------------
// the operator API

/// The operator API on any node answers for the whole cluster: an account's
/// sessions with the node of each live socket, an operator's logout of a
/// session whose socket is on another node (torn down before the answer, the
/// phone told `session_removed` `admin`), `logout_all`, and every live node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_api_on_any_node_answers_for_the_cluster() {
    const TOKEN: &str = "cluster-operator";
    let bearer = ("Authorization", "Bearer cluster-operator");
    let c = Cluster::start(3, LEASE_MS, &["--admin-token", TOKEN]).await;
    let acc = account("cl-admin");
    let phone = c.on(0).phone(&acc).await;
    let a = c.on(1).pair(&phone, &PairOpts::new()).await;
    let b = c.on(2).pair(&phone, &PairOpts::new()).await;
    let mut raw_a = raw_on(&c, 1, &phone, &a).await;

    let r = c
        .on(2)
        .http(
            "GET",
            &format!("/admin/accounts/{acc}/sessions"),
            &[bearer],
            b"",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let doc = r.json();
    assert_eq!(doc["phone_online"], true, "{doc}");
    let node_of = |sid: &str| {
        doc["sessions"]
            .as_array()
            .and_then(|all| all.iter().find(|s| s["session_id"] == sid))
            .map(|s| s["node"].clone())
            .unwrap_or_else(|| panic!("{sid} not listed: {doc}"))
    };
    assert_eq!(node_of(&a.session_id), json!(c.node_id(1)), "{doc}");
    assert_eq!(node_of(&b.session_id), json!(c.node_id(2)), "{doc}");

    // one session, its socket on node 1, ended through node 2
    let r = c
        .on(2)
        .http(
            "DELETE",
            &format!("/admin/accounts/{acc}/sessions/{}", a.session_id),
            &[bearer],
            b"",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["closed"], 1);
    ping_after_ok(&mut [&mut raw_a]).await;
    assert_torn_down_before(&mut raw_a, "admin").await;
    let removed = phone
        .expect_field("session_removed", "session_id", &json!(a.session_id))
        .await;
    assert_eq!(removed["reason"], "admin", "{removed}");
    assert_logged_out_everywhere(&c, &a.token).await;

    // the rest, through node 0
    let r = c
        .on(0)
        .http(
            "POST",
            &format!("/admin/accounts/{acc}/logout_all"),
            &[bearer],
            b"",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["closed"], 1);
    assert_eq!(b.web.expect_close().await, 4001);
    assert_logged_out_everywhere(&c, &b.token).await;

    let r = c.on(1).http("GET", "/admin/nodes", &[bearer], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut ids: Vec<String> = r.json()["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["node_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    ids.sort();
    let mut want: Vec<String> = (0..3).map(|i| c.node_id(i).to_owned()).collect();
    want.sort();
    assert_eq!(ids, want);
}

/// A node holds an account only while it is needed: once its phone and web
/// sockets are gone (sessions kept, none ephemeral), the node serving it lets
/// it go (it leaves that node's memory and the home key in Redis), and the
/// next socket, through another node, finds every session where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_nobody_needs_leaves_the_node_serving_it() {
    let c = three_nodes().await;
    let acc = account("cl-release");
    let phone = c.on(0).phone(&acc).await;
    let s = c.on(1).pair(&phone, &PairOpts::new()).await;
    let before = metric_now(c.node_addr(0), "pairgate_accounts_in_memory").await;
    assert!(before >= 1.0, "the account is held by node 0 ({before})");
    s.web.close().await;
    phone.close().await;
    wait_for_metric(
        c.node_addr(0),
        "pairgate_accounts_in_memory",
        dead_within(&c),
        |n| n == 0.0,
    )
    .await;
    let mut redis = redis::Client::open(c.redis.url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let home: Option<String> = redis::cmd("GET")
        .arg(format!("pg:{{{acc}}}:home"))
        .query_async(&mut redis)
        .await
        .expect("GET");
    assert_eq!(home, None, "the home key is freed");

    let web = c.on(2).resume_ok(&s.token, &s.session_id).await;
    let phone = c.on(1).phone(&acc).await;
    assert_eq!(
        session_ids(&list_sessions(&phone).await),
        vec![s.session_id.clone()]
    );
    web.close().await;
}

/// `--max-link-misses-per-min` counts for the whole cluster: misses by code
/// of accounts whose phones are on nodes 1 and 2 fill the minute, then a link
/// by code through node 3, the right code too, is `rate_limited`; by ref it
/// still links.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_misses_by_code_are_counted_cluster_wide() {
    let c = Cluster::start(3, LEASE_MS, &["--max-link-misses-per-min", "3"]).await;
    let wrong = || json!({"type": "link", "code": "ZZZZ-ZZZZ"});
    let (web, qr) = c.on(2).pairing(&PairOpts::new()).await;
    let a = c.on(0).phone(&account("cl-guess-a")).await;
    let b = c.on(1).phone(&account("cl-guess-b")).await;
    a.request_error(wrong(), "unknown_ref").await;
    a.request_error(wrong(), "unknown_ref").await;
    b.request_error(wrong(), "unknown_ref").await;
    let victim = c.on(2).phone(&account("cl-fresh")).await;
    victim
        .request_frame_error(&link_code(&qr), "rate_limited")
        .await;
    b.request_error(wrong(), "rate_limited").await;
    web.assert_quiet("scanned").await;
    let lr = victim.request_frame(&link_ref(&qr)).await;
    assert_eq!(lr["type"], "link_request", "{lr}");
    web.expect("scanned").await;
}
