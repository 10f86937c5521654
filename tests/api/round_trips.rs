//! Round trips to PostgreSQL, counted on the wire: a loopback proxy between bankgraph and the
//! database counts each time the database answers after bankgraph has sent something. A
//! request that waits on the database more often than it runs statements pays for it in
//! latency and in the database's CPU (issue: the read path without its cache).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

/// A TCP proxy to `upstream` that counts round trips over all its connections.
struct RoundTrips {
    addr: SocketAddr,
    count: Arc<AtomicUsize>,
}

impl RoundTrips {
    async fn start(upstream: SocketAddr) -> RoundTrips {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let counter = count.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect(upstream).await.unwrap();
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                // Set when bankgraph has sent since the database last answered.
                let asked = Arc::new(AtomicBool::new(false));
                let a = asked.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = cr.read(&mut buf).await {
                        if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        a.store(true, Ordering::SeqCst);
                    }
                });
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = sr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        if asked.swap(false, Ordering::SeqCst) {
                            counter.fetch_add(1, Ordering::SeqCst);
                        }
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        RoundTrips { addr, count }
    }

    fn now(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn a_cache_off_account_read_costs_one_round_trip_to_postgresql() {
    let db = fresh_database().await;
    if !db.starts_with("postgres") {
        return; // SQLite runs in the process: there is no round trip to count.
    }
    let mut url = url::Url::parse(&db).unwrap();
    let upstream: SocketAddr = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432)).parse().unwrap();
    let proxy = RoundTrips::start(upstream).await;
    url.set_port(Some(proxy.addr.port())).unwrap();
    let app = TestApp::spawn_with(Options {
        database_url: Some(url.to_string()),
        args: vec!["--read-cache-seconds=0".into(), "--job-workers=0".into()],
        topology: Some(Topology::OneProcess),
        ..Default::default()
    })
    .await;
    let t = app.token("round-trips");
    app.link(&t).await;
    let read = |n: usize| {
        let (app, t) = (&app, &t);
        async move {
            for _ in 0..n {
                let r = app.accounts(t, json!({})).await;
                assert!(r.as_array().is_some_and(|a| !a.is_empty()), "{r}");
            }
        }
    };
    read(20).await;
    let (before, started) = (proxy.now(), Instant::now());
    const READS: usize = 100;
    read(READS).await;
    let trips = proxy.now() - before;
    // The event dispatcher looks at the table every 2 s: one round trip each time.
    let background = started.elapsed().as_secs() as usize / 2 + 1;
    assert!(
        (READS..=READS + background).contains(&trips),
        "{READS} reads of one statement each took {trips} round trips to PostgreSQL"
    );
}

#[tokio::test]
async fn clients_that_hang_up_mid_read_do_not_make_the_pool_replace_connections() {
    let db = fresh_database().await;
    if !db.starts_with("postgres") {
        return;
    }
    let app = TestApp::spawn_with(Options {
        database_url: Some(db.clone()),
        args: vec!["--read-cache-seconds=0".into(), "--job-workers=0".into()],
        topology: Some(Topology::OneProcess),
        ..Default::default()
    })
    .await;
    let t = app.token("hang-ups");
    app.link(&t).await;
    let reads = |n: usize, timeout: Option<std::time::Duration>| {
        let (app, t) = (&app, &t);
        async move {
            let mut tasks = Vec::new();
            for _ in 0..n {
                let mut req = app.http.post(&app.graphql).bearer_auth(t).json(&json!({"query": ACCOUNTS}));
                if let Some(d) = timeout {
                    req = req.timeout(d);
                }
                tasks.push(tokio::spawn(req.send()));
            }
            for task in tasks {
                let _ = task.await;
            }
        }
    };
    // The pool's connections, by server process (the checking connection left out).
    let pool_backends = || async {
        let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&db).await.unwrap();
        let mut pids: Vec<i32> = sqlx::query_scalar(
            "select pid from pg_stat_activity where datname = current_database() \
             and backend_type = 'client backend' and pid <> pg_backend_pid()",
        )
        .fetch_all(&mut c)
        .await
        .unwrap();
        pids.sort_unstable();
        pids
    };
    reads(64, None).await;
    reads(64, None).await;
    let before = pool_backends().await;
    // Clients that give up at every point of a read: before it reaches the database, while it
    // waits for a connection, while the statement runs.
    for micros in [100u64, 300, 1_000, 2_000, 5_000] {
        reads(48, Some(std::time::Duration::from_micros(micros))).await;
    }
    reads(64, None).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let after = pool_backends().await;
    let replaced: Vec<&i32> = before.iter().filter(|p| !after.contains(p)).collect();
    assert!(
        replaced.is_empty(),
        "{} of the pool's {} connections were closed (and replaced) after clients hung up mid-read",
        replaced.len(),
        before.len()
    );
}
