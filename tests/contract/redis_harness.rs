//! The Redis machinery of the cluster tests (`support/redis.rs`) works on
//! its own: a standalone server keeps an acknowledged write across `kill -9`
//! and a restart on the same port and dir (AOF, fsync always), and three
//! masters form a Redis Cluster that reaches `cluster_state:ok` and serves a
//! hash-tagged key through a cluster client. No gateway is involved.

use std::time::Duration;

use ::redis::AsyncCommands;
use ::redis::cluster::ClusterClient;

use crate::support::*;

async fn connect(url: &str) -> ::redis::aio::MultiplexedConnection {
    let client = ::redis::Client::open(url).expect("redis url");
    tokio::time::timeout(T, client.get_multiplexed_async_connection())
        .await
        .expect("connect within 5 s")
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_survives_kill9_and_restart_on_the_same_port() {
    let mut redis = RedisServer::start().await;
    assert!(redis.is_running());
    let url = redis.url();
    assert!(url.starts_with("redis://127.0.0.1:"), "{url}");
    {
        let mut con = connect(&url).await;
        let () = con.set("harness:key", "kept").await.expect("SET");
    }
    assert!(redis.dir().join("appendonlydir").is_dir(), "no AOF dir");
    redis.kill9().await;
    assert!(!redis.is_running());
    assert!(!ping(&url).await, "PING answered after kill -9");

    redis.restart().await;
    assert!(redis.is_running());
    assert_eq!(redis.url(), url, "restarted on another port");
    let mut con = connect(&url).await;
    let got: Option<String> = con.get("harness:key").await.expect("GET");
    assert_eq!(got.as_deref(), Some("kept"), "log:\n{}", redis.log_text());

    // a clean stop and a second restart keep it too
    redis.stop().await;
    assert!(!redis.is_running());
    redis.restart().await;
    let mut con = connect(&url).await;
    let got: Option<String> = con.get("harness:key").await.expect("GET");
    assert_eq!(got.as_deref(), Some("kept"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_masters_form_a_cluster_that_serves_hash_tagged_keys() {
    let mut cluster = RedisClusterServers::start().await;
    let url = cluster.url();
    let ports: Vec<String> = cluster
        .servers
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port()))
        .collect();
    assert_eq!(url, format!("redis+cluster://{}", ports.join(",")));
    for s in &cluster.servers {
        assert_eq!(cluster_state(&s.url()).await.as_deref(), Some("ok"));
    }

    let client = ClusterClient::new(cluster.node_urls()).expect("cluster client");
    let mut con = tokio::time::timeout(T, client.get_async_connection())
        .await
        .expect("cluster connection within 5 s")
        .expect("cluster connection");
    // two keys of one hash slot (hash tag), wherever that slot lives
    let () = con.set("{acct-1}:a", "one").await.expect("SET a");
    let () = con.set("{acct-1}:b", "two").await.expect("SET b");
    let both: Vec<String> = ::redis::cmd("MGET")
        .arg("{acct-1}:a")
        .arg("{acct-1}:b")
        .query_async(&mut con)
        .await
        .expect("MGET of one slot");
    assert_eq!(both, vec!["one".to_string(), "two".to_string()]);
    drop(con);

    // every master killed and restarted: the cluster comes back with the data
    cluster.kill9_all().await;
    cluster.restart_all().await;
    let client = ClusterClient::new(cluster.node_urls()).expect("cluster client");
    let mut con = tokio::time::timeout(Duration::from_secs(10), client.get_async_connection())
        .await
        .expect("cluster connection within 10 s")
        .expect("cluster connection");
    let a: Option<String> = con.get("{acct-1}:a").await.expect("GET a");
    assert_eq!(a.as_deref(), Some("one"));
}
