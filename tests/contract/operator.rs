//! "Operator API" (version 1.1): `/admin/*` with `--admin-token`, its 404
//! without the option and 401 without the token, every route's answer, an
//! operator's logout torn down like the phone's (before the answer, durable,
//! announced to the phone), and `/readyz`.

use serde_json::{Value, json};

use crate::support::*;

const TOKEN: &str = "operator-token-0123456789";
const BEARER: (&str, &str) = ("Authorization", "Bearer operator-token-0123456789");
const NODE: &str = "node-under-test";

/// A gateway serving the operator API with [`TOKEN`], named [`NODE`].
async fn operated() -> TestGateway {
    TestGateway::spawn(|c| {
        c.admin_token = Some(TOKEN.into());
        c.node_id = Some(NODE.into());
    })
    .await
}

/// `method path` with the operator's token; asserts `status` and returns the
/// JSON body.
async fn admin(gw: &impl Gateway, method: &str, path: &str, status: u16) -> Value {
    let r = gw.http(method, path, &[BEARER], b"").await;
    assert_eq!(r.status, status, "{method} {path}: {}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|v| v.starts_with("application/json")),
        "{method} {path}: {:?}",
        r.headers
    );
    r.json()
}

fn sessions_path(account: &str) -> String {
    format!("/admin/accounts/{account}/sessions")
}

fn session_path(account: &str, session_id: &str) -> String {
    format!("/admin/accounts/{account}/sessions/{session_id}")
}

fn logout_all_path(account: &str) -> String {
    format!("/admin/accounts/{account}/logout_all")
}

/// The phone's next `session_removed`, for `admin`.
async fn expect_removed_by_admin(phone: &Client) -> String {
    let removed = phone.expect("session_removed").await;
    assert_eq!(removed["reason"], "admin", "{removed}");
    assert_no_id(&removed);
    removed["session_id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_option_every_admin_path_is_404() {
    let gw = TestGateway::start().await;
    let acc = account("noadmin");
    let phone = gw.phone(&acc).await;
    let s = gw.pair(&phone, &PairOpts::new()).await;
    let requests = [
        ("GET", "/admin".to_owned()),
        ("GET", "/admin/".to_owned()),
        ("GET", "/admin/nodes".to_owned()),
        ("POST", "/admin/nodes".to_owned()),
        ("GET", sessions_path(&acc)),
        ("DELETE", session_path(&acc, &s.session_id)),
        ("POST", logout_all_path(&acc)),
        ("PUT", "/admin/any/depth/at/all".to_owned()),
    ];
    for (method, path) in &requests {
        for headers in [&[][..], &[BEARER][..]] {
            let r = gw.http(method, path, headers, b"").await;
            assert_eq!(r.status, 404, "{method} {path} {headers:?}: {}", r.text());
        }
    }
    // Nothing was done.
    assert!(!s.web.is_closed());
    assert_eq!(
        session_ids(&list_sessions(&phone).await),
        vec![s.session_id.clone()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_token_is_401_and_does_nothing() {
    let gw = operated().await;
    let acc = account("unauth");
    let phone = gw.phone(&acc).await;
    let s = gw.pair(&phone, &PairOpts::new()).await;
    let requests = [
        ("GET", sessions_path(&acc)),
        ("DELETE", session_path(&acc, &s.session_id)),
        ("POST", logout_all_path(&acc)),
        ("GET", "/admin/nodes".to_owned()),
        // Before any routing: unknown paths and wrong methods too.
        ("GET", "/admin/nope".to_owned()),
        ("PUT", "/admin/nodes".to_owned()),
    ];
    let wrong_token = format!("Bearer {TOKEN}x");
    let prefix = format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]);
    let basic = format!("Basic {TOKEN}");
    let credentials: [&[(&str, &str)]; 5] = [
        &[],
        &[("Authorization", wrong_token.as_str())],
        &[("Authorization", prefix.as_str())],
        &[("Authorization", basic.as_str())],
        &[("Authorization", TOKEN)],
    ];
    for (method, path) in &requests {
        for headers in credentials {
            let r = gw.http(method, path, headers, b"").await;
            assert_eq!(r.status, 401, "{method} {path} {headers:?}: {}", r.text());
            assert_eq!(
                r.json(),
                json!({"error": "unauthorized"}),
                "{method} {path}"
            );
            assert!(
                r.header("www-authenticate")
                    .is_some_and(|v| v.starts_with("Bearer")),
                "{method} {path}: {:?}",
                r.headers
            );
        }
    }
    assert!(!s.web.is_closed());
    s.web.assert_none("logged_out");
    assert_eq!(
        session_ids(&list_sessions(&phone).await),
        vec![s.session_id.clone()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_wrong_methods_and_bad_account_ids() {
    let gw = operated().await;
    for path in [
        "/admin",
        "/admin/",
        "/admin/nope",
        "/admin/nodes/",
        "/admin/nodes/extra",
        "/admin/accounts",
        "/admin/accounts/someone",
        "/admin/accounts/someone/sessions/s1/more",
        "/admin/accounts/someone/logout",
        "/admin/admin/nodes",
    ] {
        assert_eq!(
            admin(&gw, "GET", path, 404).await,
            json!({"error": "not_found"}),
            "{path}"
        );
    }
    for (method, path) in [
        ("POST", "/admin/nodes"),
        ("DELETE", "/admin/nodes"),
        ("POST", "/admin/accounts/someone/sessions"),
        ("DELETE", "/admin/accounts/someone/sessions"),
        ("GET", "/admin/accounts/someone/sessions/s1"),
        ("POST", "/admin/accounts/someone/sessions/s1"),
        ("GET", "/admin/accounts/someone/logout_all"),
        ("DELETE", "/admin/accounts/someone/logout_all"),
    ] {
        let r = gw.http(method, path, &[BEARER], b"").await;
        assert_eq!(r.status, 405, "{method} {path}: {}", r.text());
    }
    let too_long = "a".repeat(65);
    for bad in ["bad!id", "a%20b", "caf%C3%A9", too_long.as_str()] {
        for (method, path) in [
            ("GET", sessions_path(bad)),
            ("DELETE", session_path(bad, "s1")),
            ("POST", logout_all_path(bad)),
        ] {
            assert_eq!(
                admin(&gw, method, &path, 400).await,
                json!({"error": "bad_request"}),
                "{method} {path}"
            );
        }
    }
    // The longest valid id is fine.
    let longest = "a".repeat(64);
    let r = admin(&gw, "GET", &sessions_path(&longest), 200).await;
    assert_eq!(r["account"], longest.as_str(), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_sessions_show_presence_and_where_each_socket_is() {
    if single_process_only(
        "it names the one node holding every socket (tests/contract/cluster.rs covers the node field across nodes)",
    ) {
        return;
    }
    let gw = operated().await;
    let acc = account("opsessions");
    // An account the gateway never saw: nothing, and no error.
    assert_eq!(
        admin(&gw, "GET", &sessions_path(&acc), 200).await,
        json!({"account": acc, "phone_online": false, "sessions": []})
    );

    let phone = gw.phone(&acc).await;
    assert_eq!(
        admin(&gw, "GET", &sessions_path(&acc), 200).await,
        json!({"account": acc, "phone_online": true, "sessions": []})
    );
    let live = gw.pair(&phone, &PairOpts::new().device_name("live")).await;
    until_next_millisecond(created_at(&live)).await;
    let off = gw
        .pair(&phone, &PairOpts::new().device_name("off").remember(false))
        .await;
    off.web.close().await;
    phone
        .expect_field("session_offline", "session_id", &json!(off.session_id))
        .await;

    let r = admin(&gw, "GET", &sessions_path(&acc), 200).await;
    assert_eq!(r["account"], acc.as_str(), "{r}");
    assert_eq!(r["phone_online"], true, "{r}");
    let sessions = r["sessions"].as_array().unwrap();
    // The phone's own list: the same sessions, same order, same fields.
    let phones = list_sessions(&phone).await;
    assert_eq!(session_ids(sessions), session_ids(&phones));
    assert_eq!(
        session_ids(sessions),
        vec![live.session_id.clone(), off.session_id.clone()]
    );
    for (s, p) in sessions.iter().zip(&phones) {
        let mut session = s.as_object().unwrap().clone();
        let node = session.remove("node").expect("SESSION adds node");
        let mut keys: Vec<&str> = session.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut expected = SESSION_KEYS.to_vec();
        expected.sort_unstable();
        assert_eq!(keys, expected, "{s}");
        let session = Value::Object(session);
        assert_session_shape(&session);
        for k in SESSION_KEYS {
            // last_active_at of a live session is "now", at either reading.
            if k != "last_active_at" || p["online"] == false {
                assert_eq!(session[k], p[k], "{k}: {s} vs {p}");
            }
        }
        match s["online"].as_bool() {
            Some(true) => assert_eq!(node, NODE, "{s}"),
            Some(false) => assert_eq!(node, Value::Null, "{s}"),
            None => panic!("online not a bool: {s}"),
        }
    }
    assert_eq!(sessions[0]["online"], true, "{r}");
    assert_eq!(sessions[1]["online"], false, "{r}");

    // The phone leaves: its sessions stay, the phone is offline.
    phone.close().await;
    live.web
        .expect_field("phone_status", "online", &json!(false))
        .await;
    let r = admin(&gw, "GET", &sessions_path(&acc), 200).await;
    assert_eq!(r["phone_online"], false, "{r}");
    assert_eq!(
        session_ids(r["sessions"].as_array().unwrap()),
        vec![live.session_id.clone(), off.session_id.clone()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_session_tears_its_socket_down_before_the_answer() {
    let gw = operated().await;
    let acc = account("opdelete");
    let phone = gw.phone(&acc).await;
    let a = gw.pair(&phone, &PairOpts::new()).await;
    let b = gw.pair(&phone, &PairOpts::new()).await;
    // a's web on a raw socket, which shows the order of what it reads
    let mut web_a = raw_session(gw.addr, &phone, &a).await;

    let r = admin(&gw, "DELETE", &session_path(&acc, &a.session_id), 200).await;
    ping_after_ok(&mut [&mut web_a]).await;
    assert_eq!(r, json!({"closed": 1}));
    assert_torn_down_before(&mut web_a, "admin").await;
    assert_eq!(expect_removed_by_admin(&phone).await, a.session_id);
    gw.assert_logged_out(&a.token).await;

    // The other session is untouched.
    assert!(!b.web.is_closed());
    b.web.assert_none("logged_out");
    assert_eq!(
        session_ids(&list_sessions(&phone).await),
        vec![b.session_id.clone()]
    );
    let ack = phone
        .send_body(&json!("still here"), Some(&b.session_id))
        .await;
    assert_eq!(ack["delivered"], 1, "{ack}");

    // Unknown: the one just ended, one that never was, another account's.
    let other = account("opdelete-other");
    for path in [
        session_path(&acc, &a.session_id),
        session_path(&acc, "nope"),
        session_path(&other, &b.session_id),
    ] {
        assert_eq!(
            admin(&gw, "DELETE", &path, 404).await,
            json!({"error": "unknown_session"}),
            "{path}"
        );
    }
    assert!(!b.web.is_closed());
    phone.assert_quiet("session_removed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_offline_session_with_the_phone_offline() {
    let gw = operated().await;
    let acc = account("opoffline");
    let phone = gw.phone(&acc).await;
    let s = gw.pair(&phone, &PairOpts::new()).await;
    s.web.close().await;
    phone
        .expect_field("session_offline", "session_id", &json!(s.session_id))
        .await;
    phone.close().await;
    assert_eq!(
        admin(&gw, "DELETE", &session_path(&acc, &s.session_id), 200).await,
        json!({"closed": 1})
    );
    gw.assert_logged_out(&s.token).await;
    assert_eq!(
        admin(&gw, "GET", &sessions_path(&acc), 200).await,
        json!({"account": acc, "phone_online": false, "sessions": []})
    );
    // The phone is not told later: the removal was announced to nobody.
    let phone = gw.phone(&acc).await;
    assert!(list_sessions(&phone).await.is_empty());
    phone.assert_quiet("session_removed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_all_ends_every_session_and_pending_link_before_the_answer() {
    let gw = operated().await;
    let acc = account("opall");
    let phone = gw.phone(&acc).await;
    let live = gw.pair(&phone, &PairOpts::new()).await;
    let off = gw.pair(&phone, &PairOpts::new()).await;
    for s in [&live, &off] {
        s.web.close().await;
        phone
            .expect_field("session_offline", "session_id", &json!(s.session_id))
            .await;
    }
    let mut web = raw_resume(gw.addr, &live.token, None).await;
    phone
        .expect_field("session_online", "session_id", &json!(live.session_id))
        .await;
    // A link request waiting for the phone's answer.
    let (pairing, qr) = gw.pairing(&PairOpts::new()).await;
    let lr = phone.request_frame(&link_ref(&qr)).await;
    assert_eq!(lr["type"], "link_request", "{lr}");
    pairing.expect("scanned").await;
    // Another account is untouched.
    let other_phone = gw.phone(&account("opall-other")).await;
    let theirs = gw.pair(&other_phone, &PairOpts::new()).await;

    let r = admin(&gw, "POST", &logout_all_path(&acc), 200).await;
    ping_after_ok(&mut [&mut web]).await;
    assert_eq!(r, json!({"closed": 2}));
    assert_torn_down_before(&mut web, "admin").await;
    let mut removed = vec![
        expect_removed_by_admin(&phone).await,
        expect_removed_by_admin(&phone).await,
    ];
    removed.sort();
    let mut ended = vec![live.session_id.clone(), off.session_id.clone()];
    ended.sort();
    assert_eq!(removed, ended);
    for s in [&live, &off] {
        gw.assert_logged_out(&s.token).await;
    }
    // The pending request is gone: its web starts over, its confirm fails.
    let rejected = pairing.expect_rx("pair_rejected").await;
    pairing.expect_after(&rejected, "qr").await;
    phone
        .request_frame_error(&confirm(&lr), "unknown_request")
        .await;
    assert!(list_sessions(&phone).await.is_empty());
    assert!(!theirs.web.is_closed());
    assert_eq!(list_sessions(&other_phone).await.len(), 1);

    // Nothing left; an account never seen has nothing either.
    assert_eq!(
        admin(&gw, "POST", &logout_all_path(&acc), 200).await,
        json!({"closed": 0})
    );
    assert_eq!(
        admin(&gw, "POST", &logout_all_path(&account("opall-none")), 200).await,
        json!({"closed": 0})
    );
    phone.assert_quiet("session_removed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_logout_is_durable_before_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--admin-token", TOKEN];
    let mut g = BinGateway::serve(dir.path(), &args, &[]).await;
    let acc = account("opdurable");
    let phone = g.phone(&acc).await;
    let live = g.pair(&phone, &PairOpts::new()).await;
    let ended = g.pair(&phone, &PairOpts::new()).await;
    let acc2 = account("opdurable-all");
    let phone2 = g.phone(&acc2).await;
    let all1 = g.pair(&phone2, &PairOpts::new()).await;
    let all2 = g.pair(&phone2, &PairOpts::new()).await;

    let r = admin(&g, "POST", &logout_all_path(&acc2), 200).await;
    assert_eq!(r, json!({"closed": 2}));
    let r = admin(&g, "DELETE", &session_path(&acc, &ended.session_id), 200).await;
    assert_eq!(r, json!({"closed": 1}));
    // right after the answer: the ending must already be durable
    g.kill9().await;

    let g = BinGateway::serve(dir.path(), &args, &[]).await;
    let _live_web = g.resume_ok(&live.token, &live.session_id).await;
    for s in [&ended, &all1, &all2] {
        g.assert_logged_out(&s.token).await;
    }
    let r = admin(&g, "GET", &sessions_path(&acc), 200).await;
    assert_eq!(
        session_ids(r["sessions"].as_array().unwrap()),
        vec![live.session_id.clone()]
    );
    let r = admin(&g, "GET", &sessions_path(&acc2), 200).await;
    assert_eq!(r["sessions"], json!([]), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_lists_this_node_with_its_sockets_and_start() {
    if single_process_only("it expects one node (tests/contract/cluster.rs covers the cluster)") {
        return;
    }
    let before = time::OffsetDateTime::now_utc();
    let gw = operated().await;
    let r = admin(&gw, "GET", "/admin/nodes", 200).await;
    let nodes = r["nodes"].as_array().unwrap_or_else(|| panic!("{r}"));
    assert_eq!(nodes.len(), 1, "{r}");
    let node = nodes[0].as_object().unwrap();
    let mut keys: Vec<&str> = node.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["node_id", "sockets", "started_at"], "{r}");
    assert_eq!(node["node_id"], NODE, "{r}");
    assert_eq!(node["sockets"], 0, "{r}");
    let started = node["started_at"].as_str().unwrap();
    assert!(is_rfc3339_utc(started), "{started}");
    let started = parse_time(started);
    // Millisecond precision: the start may read up to 1 ms before `before`.
    assert!(
        started >= before - time::Duration::milliseconds(1)
            && started <= time::OffsetDateTime::now_utc(),
        "{started} vs {before}"
    );

    let acc = account("opnodes");
    let phone = gw.phone(&acc).await;
    let _s = gw.pair(&phone, &PairOpts::new()).await;
    let r = admin(&gw, "GET", "/admin/nodes", 200).await;
    assert_eq!(r["nodes"][0]["sockets"], 2, "phone and web: {r}");
    assert_eq!(r["nodes"][0]["started_at"], nodes[0]["started_at"], "{r}");

    // Without --node-id the node still has a name.
    let unnamed = TestGateway::spawn(|c| c.admin_token = Some(TOKEN.into())).await;
    let r = admin(&unnamed, "GET", "/admin/nodes", 200).await;
    assert!(
        r["nodes"][0]["node_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_200_ready_while_running() {
    let gw = TestGateway::start().await;
    let r = gw.http_get("/readyz", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "ready");
    let r = gw.http_get("/healthz", &[]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
}
