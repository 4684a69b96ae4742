//! Opening sockets: phones connect and authenticate, web clients pair
//! through the QR handshake; each socket is then handed to its own task.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use pairgate_client::{Client, Socket};
use pairgate_protocol::ClientFrame;

use super::ctx::{Account, Ctx, Fail, H, Res, Role, SAMPLE_BATCH, fail, refused};
use super::socket::Sock;
use crate::clock::now_ns;

// ---- connect: phones authenticate, web clients pair --------------------------

pub async fn connect_all(ctx: &Arc<Ctx>) -> Vec<Arc<Account>> {
    let accounts: Vec<Arc<Account>> = (ctx.cfg.first_account..ctx.cfg.end_account)
        .map(|index| {
            Arc::new(Account {
                index,
                name: format!("{}-{index}", ctx.cfg.run_id),
                ..Account::default()
            })
        })
        .collect();
    let mut set = tokio::task::JoinSet::new();
    for acct in &accounts {
        let (ctx, acct) = (ctx.clone(), acct.clone());
        set.spawn(async move {
            if let Err(f) = setup_account(&ctx, &acct).await {
                ctx.record_fail(f, &acct.name);
            }
        });
    }
    while set.join_next().await.is_some() {}
    accounts
}

pub async fn setup_account(ctx: &Arc<Ctx>, acct: &Arc<Account>) -> Res<()> {
    let _permit = ctx.handshakes.acquire().await.map_err(fail("internal"))?;
    let token = ctx
        .tokens
        .mint_phone(&acct.name, Duration::from_secs(24 * 3600))
        .map_err(fail("mint_token"))?;
    let t0 = now_ns();
    let mut phone = Client::connect(
        &ctx.url(acct.index, 0, Role::Phone),
        &ctx.connect_options(acct.index, 0),
    )
    .await
    .map_err(refused("phone_connect"))?;
    ctx.socket_opened();
    ctx.record(H::Connect, (now_ns() - t0) / 1000);
    if let Err(e) = phone
        .request(ClientFrame::Auth {
            token: token.clone(),
        })
        .await
    {
        ctx.socket_closed();
        return Err(refused("phone_auth")(e));
    }
    ctx.c.phones_ready.fetch_add(1, Relaxed);
    for j in 0..ctx.cfg.webs_per_phone {
        match pair_web(ctx, acct, &mut phone, j).await {
            Ok((ws, token)) => {
                acct.webs.fetch_add(1, Relaxed);
                spawn_socket(ctx, acct, Role::Web, j, ws, Some(token));
            }
            Err(f) => ctx.record_fail(f, &format!("{} web {j}", acct.name)),
        }
    }
    spawn_socket(ctx, acct, Role::Phone, 0, phone.into_socket(), None);
    Ok(())
}

/// One web client through the QR handshake: `pair` → `qr{ref}`, the phone's
/// `link` → `link_request`, `link_confirm` → `device_linked`, and the web
/// client's `linked{token}` + `phone_status`.
pub async fn pair_web(
    ctx: &Arc<Ctx>,
    acct: &Account,
    phone: &mut Client,
    j: usize,
) -> Res<(Socket, String)> {
    let slot = 1 + j;
    let t0 = now_ns();
    let mut web = Client::connect(
        &ctx.url(acct.index, slot, Role::Web),
        &ctx.connect_options(acct.index, slot),
    )
    .await
    .map_err(refused("web_connect"))?;
    ctx.socket_opened();
    ctx.record(H::Connect, (now_ns() - t0) / 1000);
    let result = async {
        let t0 = now_ns();
        let qr = web
            .request(ClientFrame::Pair {
                remember: true,
                device_name: Some(format!("loadtest web {j}")),
            })
            .await
            .map_err(refused("pair"))?;
        let reference = qr["ref"].as_str().ok_or_else(|| Fail {
            kind: "pair",
            msg: format!("qr without ref: {qr}"),
            code: None,
        })?;
        let request = phone.link(reference).await.map_err(refused("link"))?;
        let (confirmed, linked) = tokio::join!(phone.confirm(&request.request_id), async {
            let linked = web.expect("linked").await;
            (linked, now_ns())
        });
        let session = confirmed.map_err(refused("link_confirm"))?;
        if j == 0 {
            *acct.first_session.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(session.session_id);
        }
        let (linked, t1) = linked;
        let linked = linked.map_err(refused("linked"))?;
        let status = web
            .expect("phone_status")
            .await
            .map_err(refused("linked"))?;
        if status["online"] != true {
            ctx.c.phone_status_offline.fetch_add(1, Relaxed);
        }
        ctx.record(H::Pair, (t1 - t0) / 1000);
        let token = linked["token"].as_str().ok_or_else(|| Fail {
            kind: "linked",
            msg: format!("linked without token: {linked}"),
            code: None,
        })?;
        Ok(token.to_owned())
    }
    .await;
    match result {
        Ok(token) => {
            ctx.c.webs_paired.fetch_add(1, Relaxed);
            Ok((web.into_socket(), token))
        }
        Err(f) => {
            ctx.socket_closed();
            Err(f)
        }
    }
}

pub fn spawn_socket(
    ctx: &Arc<Ctx>,
    acct: &Arc<Account>,
    role: Role,
    web_index: usize,
    ws: Socket,
    token: Option<String>,
) {
    ctx.join();
    let mut sock = Sock {
        ctx: ctx.clone(),
        acct: acct.clone(),
        role,
        web_index,
        ws: Some(ws),
        token,
        window: None,
        samples: Vec::with_capacity(SAMPLE_BATCH),
        last_seq: Vec::new(),
        arrived_seq: 0,
        recent: Vec::new(),
        logged_out: false,
        logout_closed: false,
    };
    let mut phase = ctx.phase.subscribe();
    tokio::spawn(async move {
        let result = sock.run(&mut phase).await;
        sock.ctx.record_batch(&mut sock.samples);
        if let Err(f) = result {
            let who = match role {
                Role::Phone => format!("{} phone", sock.acct.name),
                Role::Web => format!("{} web {web_index}", sock.acct.name),
            };
            let who = format!("{who} (last frames: {})", sock.recent.join(","));
            sock.ctx.record_fail(f, &who);
            if sock.ws.is_some() {
                sock.ctx.socket_closed();
            }
        }
        sock.ctx.leave(sock.arrived_seq);
    });
}
