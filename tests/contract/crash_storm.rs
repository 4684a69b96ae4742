//! `kill -9` at random moments during a storm of links, logouts and
//! logout_all from several phones, over and over on one data dir (the built
//! binary). After each restart: the store opened cleanly, no session whose
//! ending was acknowledged (`ok`) resumes, and every link acknowledged to its
//! web socket (`linked`) still resumes unless an acknowledged logout ended
//! it. Operations the kill cut short are left out of the checks (either
//! outcome is allowed), until a later acknowledged `logout_all` settles them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use pairgate::client::{Client as Wire, ConnectOptions};
use pairgate::protocol::{ClientFrame, LinkTarget};
use rand::Rng;

use crate::support::*;

/// Kills in one run (the issue asks for at least 50).
const KILLS: usize = 55;
/// Phones storming at once, one account each.
const PHONES: usize = 4;
/// A storm lasts a random time up to this before the kill.
const MAX_STORM_MS: u64 = 250;

/// What the test knows of one account's sessions, by token.
#[derive(Default)]
struct Known {
    /// `linked` reached the web, and no ending was tried since.
    linked: BTreeMap<String, String>,
    /// An ending (or its ok) was cut short: either outcome is allowed.
    unsure: BTreeMap<String, String>,
    /// `logout` / `logout_all` answered `ok` since the last restart: must
    /// never resume.
    ended: BTreeMap<String, String>,
    /// Ended before the last restart (checked again at the end).
    ended_before: Vec<TokenAndId>,
}

#[derive(Default)]
struct Tally {
    links: usize,
    logouts: usize,
    logout_alls: usize,
    cut_short: usize,
}

type Shared = Arc<Mutex<(Known, Tally)>>;
/// A session token and the session it names.
type TokenAndId = (String, String);

fn opts() -> ConnectOptions {
    ConnectOptions {
        timeout: T,
        ..ConnectOptions::default()
    }
}

/// One phone's storm until its socket dies with the gateway: link (remember),
/// logout of a linked session, or logout_all, at random.
async fn storm(addr: std::net::SocketAddr, token: String, state: Shared) {
    let Ok(mut phone) = Wire::phone(&ws_url(addr, "/ws/phone"), &token, &opts()).await else {
        return;
    };
    // Linked web sockets stay open, so endings tear live sockets down.
    let mut webs = Vec::new();
    loop {
        let roll = rand::rng().random_range(0..10);
        let done = if roll < 6 {
            link(addr, &mut phone, &state, &mut webs).await
        } else if roll < 9 {
            logout(&mut phone, &state).await
        } else {
            logout_all(&mut phone, &state).await
        };
        if !done {
            state.lock().unwrap().1.cut_short += 1;
            return;
        }
    }
}

async fn link(
    addr: std::net::SocketAddr,
    phone: &mut Wire,
    state: &Shared,
    webs: &mut Vec<Wire>,
) -> bool {
    let Ok(mut web) = Wire::connect(&ws_url(addr, "/ws/web"), &opts()).await else {
        return false;
    };
    let pair = ClientFrame::Pair {
        remember: true,
        device_name: None,
    };
    if web.send(&pair, None).await.is_err() {
        return false;
    }
    let Ok(qr) = web.expect("qr").await else {
        return false;
    };
    let target = LinkTarget::Ref(qr["ref"].as_str().unwrap_or_default().to_owned());
    let Ok(lr) = phone.request(ClientFrame::Link(target)).await else {
        return false;
    };
    let request_id = lr["request_id"].as_str().unwrap_or_default().to_owned();
    if phone
        .request(ClientFrame::LinkConfirm { request_id })
        .await
        .is_err()
    {
        return false;
    }
    let Ok(linked) = web.expect("linked").await else {
        return false;
    };
    let (Some(token), Some(sid)) = (linked["token"].as_str(), linked["session_id"].as_str()) else {
        panic!("linked without token or session_id: {linked}");
    };
    let mut g = state.lock().unwrap();
    g.0.linked.insert(token.to_owned(), sid.to_owned());
    g.1.links += 1;
    webs.push(web);
    true
}

async fn logout(phone: &mut Wire, state: &Shared) -> bool {
    // Marked unsure before it is sent: a kill from here on may go either way.
    let picked = {
        let mut g = state.lock().unwrap();
        let first = g.0.linked.keys().next().cloned();
        first.map(|token| {
            let sid = g.0.linked.remove(&token).unwrap_or_default();
            g.0.unsure.insert(token.clone(), sid.clone());
            (token, sid)
        })
    };
    let Some((token, sid)) = picked else {
        return true;
    };
    let frame = ClientFrame::Logout {
        session_id: Some(sid.clone()),
    };
    match phone.request(frame).await {
        Ok(ok) => {
            assert_eq!(ok["type"], "ok", "{ok}");
            let mut g = state.lock().unwrap();
            g.0.unsure.remove(&token);
            g.0.ended.insert(token, sid);
            g.1.logouts += 1;
            true
        }
        Err(e) => {
            assert!(
                e.code().is_none(),
                "logout of a linked session refused: {e}"
            );
            false
        }
    }
}

async fn logout_all(phone: &mut Wire, state: &Shared) -> bool {
    {
        let mut g = state.lock().unwrap();
        let linked = std::mem::take(&mut g.0.linked);
        g.0.unsure.extend(linked);
    }
    match phone.request(ClientFrame::LogoutAll).await {
        Ok(ok) => {
            assert_eq!(ok["type"], "ok", "{ok}");
            let mut g = state.lock().unwrap();
            // Every session the account had is ended, also those whose
            // ending was cut short before.
            let unsure = std::mem::take(&mut g.0.unsure);
            g.0.ended.extend(unsure);
            g.1.logout_alls += 1;
            true
        }
        Err(e) => {
            assert!(e.code().is_none(), "logout_all refused: {e}");
            false
        }
    }
}

/// `auth` with a session token: `Ok(session_id)` on `ready`, `Err(code)` on
/// an `error` reply.
async fn resume_answer(addr: std::net::SocketAddr, token: &str) -> Result<String, String> {
    let mut web = Wire::connect(&ws_url(addr, "/ws/web"), &opts())
        .await
        .expect("open web socket to resume");
    let auth = ClientFrame::Auth {
        token: token.to_owned(),
    };
    match web.request(auth).await {
        Ok(ready) => Ok(ready["session_id"].as_str().unwrap_or_default().to_owned()),
        Err(e) => Err(e.code().map(str::to_owned).unwrap_or_else(|| e.to_string())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_storm_keeps_every_acknowledged_link_and_ending() {
    if single_process_only("kill -9 of one binary") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Room for the links the storm makes between two logout_alls.
    let args = ["--max-devices", "1000"];
    let mut g = BinGateway::serve(dir.path(), &args, &[]).await;
    let accounts: Vec<String> = (0..PHONES).map(|_| account("storm")).collect();
    let states: Vec<Shared> = accounts.iter().map(|_| Shared::default()).collect();
    let (mut resumed, mut refused, mut listed) = (0usize, 0usize, 0usize);

    for kill in 1..=KILLS {
        let storms: Vec<_> = accounts
            .iter()
            .zip(&states)
            .map(|(acc, state)| tokio::spawn(storm(g.addr, g.phone_token(acc), state.clone())))
            .collect();
        let storm_ms = rand::rng().random_range(1..=MAX_STORM_MS);
        tokio::time::sleep(Duration::from_millis(storm_ms)).await;
        g.kill9().await;
        for s in storms {
            tokio::time::timeout(LONG, s)
                .await
                .expect("a storm ended with the gateway")
                .expect("storm task");
        }

        g = BinGateway::serve(dir.path(), &args, &[]).await;
        let log = g.log_text();
        assert!(
            !log.contains("ERROR") && !log.contains("unreadable"),
            "restart {kill}: the store did not open cleanly:\n{log}"
        );
        for (acc, state) in accounts.iter().zip(&states) {
            let (must_resume, must_not): (Vec<TokenAndId>, Vec<TokenAndId>) = {
                let g = state.lock().unwrap();
                let pairs = |m: &BTreeMap<String, String>| {
                    m.iter()
                        .map(|(t, s)| (t.clone(), s.clone()))
                        .collect::<Vec<_>>()
                };
                (pairs(&g.0.linked), pairs(&g.0.ended))
            };
            let addr = g.addr;
            let answers: Vec<_> = futures::stream::iter(must_resume.iter().chain(&must_not))
                .map(|(token, sid)| async move { (sid.clone(), resume_answer(addr, token).await) })
                .buffered(16)
                .collect()
                .await;
            let (kept, gone) = answers.split_at(must_resume.len());
            for (sid, answer) in kept {
                assert_eq!(
                    answer.as_deref(),
                    Ok(sid.as_str()),
                    "restart {kill}: acknowledged link {sid} of {acc} lost"
                );
                resumed += 1;
            }
            for (sid, answer) in gone {
                assert_eq!(
                    answer.as_deref().map_err(String::as_str),
                    Err("logged_out"),
                    "restart {kill}: session {sid} of {acc} resumed after its acknowledged logout"
                );
                refused += 1;
            }
            // The phone's list agrees: every kept link, no ended session.
            let phone = g.phone(acc).await;
            let ids: BTreeSet<String> = session_ids(&list_sessions(&phone).await)
                .into_iter()
                .collect();
            for (_, sid) in &must_resume {
                assert!(ids.contains(sid), "restart {kill}: {sid} not listed");
            }
            for (_, sid) in &must_not {
                assert!(!ids.contains(sid), "restart {kill}: ended {sid} listed");
            }
            listed += 1;
            // Checked at every restart while new; all of them once more at
            // the end (checking each at every restart would make the run
            // quadratic).
            let mut g = state.lock().unwrap();
            let new = std::mem::take(&mut g.0.ended);
            g.0.ended_before.extend(new);
        }
    }
    for state in &states {
        let ended: Vec<TokenAndId> = state.lock().unwrap().0.ended_before.clone();
        let addr = g.addr;
        let answers: Vec<_> = futures::stream::iter(&ended)
            .map(|(token, sid)| async move { (sid.clone(), resume_answer(addr, token).await) })
            .buffered(16)
            .collect()
            .await;
        for (sid, answer) in answers {
            assert_eq!(
                answer.as_deref().map_err(String::as_str),
                Err("logged_out"),
                "after the last restart: {sid} resumed after its acknowledged logout"
            );
            refused += 1;
        }
    }
    g.kill9().await;

    let mut total = Tally::default();
    for state in &states {
        let g = state.lock().unwrap();
        total.links += g.1.links;
        total.logouts += g.1.logouts;
        total.logout_alls += g.1.logout_alls;
        total.cut_short += g.1.cut_short;
    }
    eprintln!(
        "crash storm: {KILLS} kill -9 and restarts on one data dir, {PHONES} phones; \
         acknowledged: {} links, {} logouts, {} logout_alls; {} operations cut short by a kill; \
         checked after the restarts: {resumed} resumes of acknowledged links (all ready), \
         {refused} resumes of acknowledged endings (all logged_out), {listed} session lists, \
         every store opened cleanly",
        total.links, total.logouts, total.logout_alls, total.cut_short
    );
    assert!(
        total.links > 0 && total.logouts + total.logout_alls > 0,
        "the storms acknowledged nothing: no check was made"
    );
}
