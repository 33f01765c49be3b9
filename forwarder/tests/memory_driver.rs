//! The tokio driver (`forwarder::driver`) against the in-memory test server of
//! `support`, over `tokio::io::duplex`: echo, backpressure, rekeying, channel number reuse,
//! a session dying under open channels, refused channels and keepalive death detection.
//!
//! Timing: the driver runs the session clock on `std::time::Instant::now()` and converts its
//! deadlines with `tokio::time::Instant::from_std`, so a paused tokio clock would fire the
//! driver's sleep while the session, reading the real clock, still sees the deadline ahead
//! (the driver would spin until real time caught up). The keepalive tests therefore run on
//! real time with a one-second interval, and every wait is bounded.

mod support;

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use forwarder::driver::{ChannelStream, OpenError, SessionObserver};
use forwarder::session::{ServerAlive, SessionError};
use ssh_connection::OpenFailureReason;
use support::{
    ClientOptions, KeepaliveAnswer, STEP, ServerOptions, connected, echo_check, pattern, within,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1024 * 1024;

/// What a [`SessionObserver`] was told.
#[derive(Default)]
struct Observed {
    rtts: Mutex<Vec<Duration>>,
    rekeys: AtomicU64,
}

impl SessionObserver for Observed {
    fn keepalive_answered(&self, rtt: Duration) {
        self.rtts.lock().unwrap().push(rtt);
    }

    fn rekeyed(&self, count: u64) {
        self.rekeys.fetch_add(count, Ordering::SeqCst);
    }
}

async fn open(handle: &forwarder::driver::SessionHandle, host: &str) -> ChannelStream {
    within(
        STEP,
        "open_direct_tcpip",
        handle.open_direct_tcpip(host, 5432, "127.0.0.1", 40000),
    )
    .await
    .expect("channel opens")
}

fn assert_clean(stats: &support::ServerStats, window: u32) {
    assert_eq!(stats.window_violations, 0, "{stats:?}");
    assert_eq!(stats.packet_violations, 0, "{stats:?}");
    assert_eq!(stats.unknown_channel, 0, "{stats:?}");
    assert!(stats.max_pending <= window as usize, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn echo_several_mib_both_ways_at_once() {
    let (_server, conn, client) =
        connected(ServerOptions::default(), ClientOptions::default()).await;
    let h = &client.handle;

    // One channel, 8 MiB written while its echo is read.
    let data = pattern(1, 8 * MIB);
    let ch = open(h, "db.internal").await;
    within(Duration::from_secs(60), "8 MiB echo", echo_check(ch, &data))
        .await
        .expect("echo intact");

    // Four channels at once, 2 MiB each.
    let mut tasks = Vec::new();
    for i in 0..4u64 {
        let ch = open(h, "db.internal").await;
        tasks.push(tokio::spawn(async move {
            let data = pattern(10 + i, 2 * MIB + i as usize * 777);
            echo_check(ch, &data).await
        }));
    }
    for t in tasks {
        within(Duration::from_secs(60), "parallel echo", t)
            .await
            .unwrap()
            .expect("echo intact");
    }
    let s = conn.stats();
    assert_eq!(s.bytes_in, s.bytes_out);
    assert!(s.bytes_in >= (16 * MIB) as u64, "{s:?}");
    assert_clean(&s, ServerOptions::default().window);
    assert!(client.handle.error().is_none());
}

#[tokio::test(flavor = "current_thread")]
async fn echo_on_a_single_threaded_runtime() {
    let (_server, conn, client) =
        connected(ServerOptions::default(), ClientOptions::default()).await;
    let data = pattern(2, 3 * MIB);
    let ch = open(&client.handle, "db.internal").await;
    within(Duration::from_secs(60), "3 MiB echo", echo_check(ch, &data))
        .await
        .expect("echo intact");
    assert_clean(&conn.stats(), ServerOptions::default().window);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_that_does_not_read_stops_the_writer_and_then_it_resumes() {
    const SERVER_WINDOW: u32 = 128 * 1024;
    const CLIENT_WINDOW: u32 = 256 * 1024;
    let server = ServerOptions {
        window: SERVER_WINDOW,
        ..ServerOptions::default()
    };
    let client = ClientOptions {
        connection: ssh_connection::Config {
            initial_window: CLIENT_WINDOW,
            max_packet: 32 * 1024,
        },
        ..ClientOptions::default()
    };
    let (_server, conn, client) = connected(server, client).await;
    let ch = open(&client.handle, "db.internal").await;
    let (mut r, mut w) = tokio::io::split(ch);
    let data = pattern(3, 4 * MIB);

    // Write without reading: the echo fills our window, the unechoed rest fills the
    // server's, and then a write stays Pending.
    let mut sent = 0;
    loop {
        let end = (sent + 16 * 1024).min(data.len());
        match tokio::time::timeout(Duration::from_millis(500), w.write(&data[sent..end])).await {
            Ok(Ok(n)) => {
                assert!(n > 0);
                sent += n;
                assert!(
                    sent <= (SERVER_WINDOW + CLIENT_WINDOW) as usize,
                    "the writer got {sent} bytes past both windows"
                );
            }
            Ok(Err(e)) => panic!("write failed: {e}"),
            Err(_) => break,
        }
    }
    assert!(
        sent >= CLIENT_WINDOW as usize,
        "stalled after only {sent} bytes"
    );
    // Still stalled a moment later, and the server never got past its window.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), w.write(&data[sent..sent + 1]))
            .await
            .is_err(),
        "a write went through while nothing was read"
    );
    let s = conn.stats();
    assert!(s.bytes_in <= sent as u64);
    assert_eq!(s.bytes_out, u64::from(CLIENT_WINDOW), "{s:?}");
    assert_clean(&s, SERVER_WINDOW);

    // Read: everything flows again, in order.
    let rest = &data[sent..];
    let write = async {
        w.write_all(rest).await?;
        w.shutdown().await
    };
    let read = async {
        let mut got = Vec::new();
        r.read_to_end(&mut got).await?;
        Ok::<_, io::Error>(got)
    };
    let (wrote, got) = within(Duration::from_secs(60), "the rest of the transfer", async {
        tokio::join!(write, read)
    })
    .await;
    wrote.expect("write");
    let got = got.expect("read");
    assert_eq!(got.len(), data.len());
    assert!(got == data, "echo differs");
    assert_clean(&conn.stats(), SERVER_WINDOW);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_rekeys_in_the_middle_of_a_transfer() {
    let server = ServerOptions {
        rekey_every: Some(512 * 1024),
        ..ServerOptions::default()
    };
    let (_server, conn, client) = connected(server, ClientOptions::default()).await;
    assert_eq!(client.handle.log().kex_count, 1);
    let observed = Arc::new(Observed::default());
    client.handle.observe(observed.clone());
    // The first key exchange is not a rekey.
    assert_eq!(observed.rekeys.load(Ordering::SeqCst), 0);
    // Rekeys finish a while after they start (the one-write driver moves data fast), so the
    // transfer is long enough for several to complete while data still comes in.
    let data = pattern(4, 12 * MIB + 12345);
    let ch = open(&client.handle, "db.internal").await;
    within(
        Duration::from_secs(60),
        "echo across rekeys",
        echo_check(ch, &data),
    )
    .await
    .expect("echo intact");
    // A rekey started by the last megabyte may still be finishing.
    let t0 = Instant::now();
    loop {
        let (c, s) = (client.handle.log().kex_count, conn.stats().kex_count);
        if c == s && c >= 3 {
            break;
        }
        assert!(
            t0.elapsed() < STEP,
            "key exchanges: client {c}, server {s}: {:?} {:?}",
            conn.stats(),
            client.handle.error()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let s = conn.stats();
    // At least two completed while data was still coming in.
    let mid = s
        .rekeyed_at
        .iter()
        .filter(|&&at| at < data.len() as u64)
        .count();
    assert!(mid >= 2, "{s:?}");
    assert_clean(&s, ServerOptions::default().window);
    // The observer was told of each rekey as it completed; one that comes later is told of
    // those already done at once.
    let rekeys = client.handle.log().kex_count - 1;
    assert_eq!(observed.rekeys.load(Ordering::SeqCst), rekeys);
    let late = Arc::new(Observed::default());
    client.handle.observe(late.clone());
    assert_eq!(late.rekeys.load(Ordering::SeqCst), rekeys);
    // One more, asked for by hand while idle, and data still flows.
    rekey(&conn, &client.handle).await;
    let ch = open(&client.handle, "db.internal").await;
    echo_check(ch, b"after the rekey").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekeys_run_on_first_messages_the_driver_made_ahead() {
    // Once the session has rekeyed (a rekey is likely to come again), the driver makes the
    // next exchange's first message on a blocking thread after each one and hands it to the
    // session; the rekeys the server asks for then run on it. The first rekey, and one asked
    // for before the message is ready, make their own, so the test asks until three did not.
    let (_server, conn, client) =
        connected(ServerOptions::default(), ClientOptions::default()).await;
    let h = &client.handle;
    assert_eq!(
        h.log().kex_prepared,
        0,
        "the test's session brings none for the first"
    );
    let t0 = Instant::now();
    while h.log().kex_prepared < 3 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{} of {} exchanges ran on a prepared message",
            h.log().kex_prepared,
            h.log().kex_count
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        rekey(&conn, h).await;
        let log = h.log();
        assert!(log.kex_prepared < log.kex_count, "{log:?}");
    }
    assert_eq!(conn.stats().kex_count, h.log().kex_count);
    // The keys those exchanges made carry data both ways.
    echoes_after_rekeys(h, 9, 256 * 1024).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn key_exchange_work_runs_on_blocking_threads_when_asked() {
    // Every exchange, the first and the rekeys, has its key pair made and the server's
    // reply proven off the session's thread; a session not asked to does neither there.
    for elsewhere in [true, false] {
        let opts = ClientOptions {
            kex_work_elsewhere: elsewhere,
            ..ClientOptions::default()
        };
        let (_server, conn, client) = connected(ServerOptions::default(), opts).await;
        let h = &client.handle;
        for _ in 0..2 {
            rekey(&conn, h).await;
        }
        let log = h.log();
        assert_eq!(log.kex_count, 3, "{log:?}");
        let want = if elsewhere { 3 } else { 0 };
        assert_eq!(log.kex_proven_elsewhere, want, "{log:?}");
        // Every key pair was made off the session's thread too: ahead of need once a rekey
        // was likely, else when the exchange needed it.
        if elsewhere {
            assert_eq!(log.kex_made_elsewhere + log.kex_prepared, 3, "{log:?}");
            assert!(log.kex_made_elsewhere >= 2, "{log:?}");
        } else {
            assert_eq!(log.kex_made_elsewhere, 0, "{log:?}");
        }
        echoes_after_rekeys(h, 11, 128 * 1024).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_waits_for_our_newkeys_while_the_key_exchange_work_is_out() {
    // The server rekeys every 256 KiB of a transfer while the session makes its key pairs and
    // proves the replies on blocking threads: what the channel sends meanwhile must wait for
    // our NEWKEYS (the test server, like Dropbear, ends the connection otherwise).
    let server = ServerOptions {
        rekey_every: Some(256 * 1024),
        ..ServerOptions::default()
    };
    let opts = ClientOptions {
        kex_work_elsewhere: true,
        ..ClientOptions::default()
    };
    let (_server, conn, client) = connected(server, opts).await;
    let h = &client.handle;
    let data = pattern(21, 4 * MIB + 321);
    let ch = open(h, "db.internal").await;
    within(
        Duration::from_secs(60),
        "echo across rekeys",
        echo_check(ch, &data),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?} {:?}", h.error(), conn.stats()));
    assert!(h.error().is_none(), "{:?}", h.error());
    let log = h.log();
    assert!(log.kex_count >= 4, "{log:?}");
    assert_eq!(log.kex_proven_elsewhere, log.kex_count, "{log:?}");
}

/// `len` bytes from `seed` go through a new channel and come back intact.
async fn echoes_after_rekeys(h: &forwarder::driver::SessionHandle, seed: u64, len: usize) {
    let ch = open(h, "db.internal").await;
    let data = pattern(seed, len);
    within(STEP, "echo after the rekeys", echo_check(ch, &data))
        .await
        .expect("echo intact");
    assert!(h.error().is_none(), "{:?}", h.error());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn channel_numbers_are_reused_in_sequence_and_in_parallel() {
    let (_server, conn, client) =
        connected(ServerOptions::default(), ClientOptions::default()).await;
    let h = client.handle.clone();

    let mut max_id = 0;
    for i in 0..200u64 {
        let ch = open(&h, "db.internal").await;
        max_id = max_id.max(ch.id().0);
        let data = pattern(100 + i, 1 + (i as usize * 97) % 4096);
        within(STEP, "sequential echo", echo_check(ch, &data))
            .await
            .unwrap_or_else(|e| panic!("channel {i}: {e}"));
    }
    // One channel at a time: a number is free again as soon as its close completes.
    assert!(max_id < 4, "client channel numbers went up to {max_id}");
    let s = conn.stats();
    assert_eq!(s.opened, 200);
    assert!(s.max_server_id.unwrap() < 4, "{s:?}");

    for round in 0..2u64 {
        let mut tasks = Vec::new();
        for i in 0..50u64 {
            let h = h.clone();
            tasks.push(tokio::spawn(async move {
                let ch = open(&h, "db.internal").await;
                let id = ch.id().0;
                let data = pattern(1000 * round + i, 20_000 + i as usize * 311);
                echo_check(ch, &data).await.map(|()| id)
            }));
        }
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(
                within(STEP, "parallel echo", t)
                    .await
                    .unwrap()
                    .expect("echo intact"),
            );
        }
        let top = ids.iter().copied().max().unwrap();
        assert!(
            top < 60,
            "round {round}: client channel numbers up to {top}"
        );
    }
    within(STEP, "every channel to be closed", async {
        while h.channel_count() != 0 || conn.stats().open_now != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let s = conn.stats();
    assert_eq!(s.opened, 300);
    assert!(s.max_server_id.unwrap() < 60, "{s:?}");
    assert!(s.max_open <= 50, "{s:?}");
    assert_clean(&s, ServerOptions::default().window);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_session_fails_every_open_channel_promptly() {
    let (_server, conn, client) =
        connected(ServerOptions::default(), ClientOptions::default()).await;
    let mut chans = Vec::new();
    for _ in 0..10 {
        chans.push(open(&client.handle, "db.internal").await);
    }
    // Each channel works, then sits idle.
    for ch in &mut chans {
        ch.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        within(STEP, "ping echo", ch.read_exact(&mut b))
            .await
            .unwrap();
        assert_eq!(&b, b"ping");
    }
    assert!(chans.iter().all(|c| !c.session_failed()));

    conn.kill();
    let t0 = Instant::now();
    let mut reads = Vec::new();
    for mut ch in chans {
        reads.push(tokio::spawn(async move {
            let mut b = [0u8; 16];
            let r = tokio::time::timeout(Duration::from_secs(1), ch.read(&mut b)).await;
            (r, ch)
        }));
    }
    let mut kept = Vec::new();
    for t in reads {
        let (r, ch) = t.await.unwrap();
        match r {
            Err(_) => panic!("a channel read did not end within 1 s of the session dying"),
            Ok(Ok(n)) => panic!("a channel read returned Ok({n}) instead of an error"),
            Ok(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted, "{e}"),
        }
        kept.push(ch);
    }
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert!(kept.iter().all(ChannelStream::session_failed));
    // Writes fail too.
    let e = kept[0].write(b"x").await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted, "{e}");

    let opened = within(
        Duration::from_secs(1),
        "open after death",
        client
            .handle
            .open_direct_tcpip("db.internal", 5432, "127.0.0.1", 1),
    )
    .await;
    assert!(
        matches!(opened, Err(OpenError::Session(_))),
        "open after death: {opened:?}"
    );
    assert!(client.handle.error().is_some());
    let end = client.finished(STEP).await;
    assert_eq!(
        end,
        Err(SessionError::Transport(
            ssh_transport::Error::ConnectionLost
        ))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_channel_reports_the_servers_reason() {
    let server = ServerOptions {
        refuse_hosts: vec!["forbidden.internal".into()],
        ..ServerOptions::default()
    };
    let (_server, conn, client) = connected(server, ClientOptions::default()).await;
    let r = within(
        STEP,
        "refused open",
        client
            .handle
            .open_direct_tcpip("forbidden.internal", 5432, "127.0.0.1", 1),
    )
    .await;
    match r {
        Err(OpenError::Refused {
            reason,
            description,
        }) => {
            assert_eq!(reason, OpenFailureReason::ADMINISTRATIVELY_PROHIBITED);
            assert!(
                description.contains("forbidden.internal:5432 refused by the test server"),
                "{description}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(conn.stats().refused, 1);
    assert_eq!(client.handle.channel_count(), 0);
    // The session goes on.
    let ch = open(&client.handle, "db.internal").await;
    echo_check(ch, b"still here").await.unwrap();
    assert!(client.handle.error().is_none());
}

const ALIVE: ServerAlive = ServerAlive {
    interval: Duration::from_secs(1),
    count_max: 2,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_ends_the_session_as_not_responding() {
    let client = ClientOptions {
        server_alive: Some(ALIVE),
        ..ClientOptions::default()
    };
    let (_server, conn, client) = connected(ServerOptions::default(), client).await;
    let ch = open(&client.handle, "db.internal").await;
    conn.freeze();
    let t0 = Instant::now();
    let end = client.finished(Duration::from_secs(10)).await;
    let took = t0.elapsed();
    assert_eq!(end, Err(SessionError::ServerNotResponding { missed: 2 }));
    // Two keepalives at 1 s and 2 s go unanswered; the third deadline (3 s) ends it.
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(6),
        "{took:?}"
    );
    drop(ch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_keepalives_keep_an_idle_session_alive() {
    let client = ClientOptions {
        server_alive: Some(ALIVE),
        ..ClientOptions::default()
    };
    let (_server, conn, client) = connected(ServerOptions::default(), client).await;
    let observed = Arc::new(Observed::default());
    client.handle.observe(observed.clone());
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(!client.driver.is_finished(), "{:?}", client.handle.error());
    let sent = conn.stats().keepalives;
    assert!(sent >= 2, "{:?}", conn.stats());
    // Each answer was reported as it came (the last may still be on its way), with a
    // round trip of an in-memory pipe.
    let rtts = observed.rtts.lock().unwrap().clone();
    assert!(
        rtts.len() + 1 >= sent as usize && rtts.len() <= sent as usize,
        "{} answers reported, {sent} keepalives: {rtts:?}",
        rtts.len()
    );
    assert!(rtts.iter().all(|r| *r < STEP), "{rtts:?}");
    let ch = open(&client.handle, "db.internal").await;
    echo_check(ch, b"alive").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_keepalives_end_the_session_even_though_the_server_reads() {
    let server = ServerOptions {
        keepalive: KeepaliveAnswer::Silent,
        ..ServerOptions::default()
    };
    let client = ClientOptions {
        server_alive: Some(ALIVE),
        ..ClientOptions::default()
    };
    let (_server, conn, client) = connected(server, client).await;
    let end = client.finished(Duration::from_secs(10)).await;
    assert_eq!(end, Err(SessionError::ServerNotResponding { missed: 2 }));
    assert!(conn.stats().keepalives >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_babbles_through_a_rekey_it_never_finishes_ends_at_the_handshake_timeout() {
    let mut client = ClientOptions {
        server_alive: Some(ALIVE),
        ..ClientOptions::default()
    };
    client.transport.handshake_timeout = Some(Duration::from_secs(1));
    let (_server, conn, client) = connected(ServerOptions::default(), client).await;
    let ch = open(&client.handle, "db.internal").await;
    echo_check(ch, b"before").await.unwrap();
    // The server starts a key exchange, then only sends IGNOREs: the client answers its
    // KEXINIT and holds every channel's data until the exchange ends, which it never does.
    // Keepalives see the IGNOREs as life and never fire.
    conn.rekey();
    conn.babble();
    let t0 = Instant::now();
    let end = client.finished(Duration::from_secs(10)).await;
    assert_eq!(
        end,
        Err(SessionError::Transport(ssh_transport::Error::RekeyTimeout(
            Duration::from_secs(1)
        )))
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );
}

/// The driver runs due timers when the server keeps it busy through its whole poll budget:
/// on one thread, against a server that refills a 16 MiB pipe with IGNOREs whenever the
/// client has read some, every round of the driver reads something (it reads at most 32
/// rounds of 256 KiB, 8 MiB, before it yields), so its idle path, where timers otherwise run,
/// is never reached. Only the check at the end of the budget can end the never-finished
/// rekey.
#[tokio::test(flavor = "current_thread")]
async fn a_server_that_floods_through_a_rekey_ends_at_the_handshake_timeout_by_the_budget_path() {
    let mut client = ClientOptions {
        server_alive: Some(ALIVE),
        ..ClientOptions::default()
    };
    client.transport.handshake_timeout = Some(Duration::from_secs(1));
    let server = ServerOptions {
        duplex_capacity: 16 * 1024 * 1024,
        ..ServerOptions::default()
    };
    let (_server, conn, client) = connected(server, client).await;
    let ch = open(&client.handle, "db.internal").await;
    echo_check(ch, b"before").await.unwrap();
    conn.rekey();
    conn.flood();
    let t0 = Instant::now();
    let end = client.finished(Duration::from_secs(10)).await;
    assert_eq!(
        end,
        Err(SessionError::Transport(ssh_transport::Error::RekeyTimeout(
            Duration::from_secs(1)
        ))),
        "after {:?}",
        t0.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_connection_attempt_gets_a_fresh_server() {
    // What a supervisor's reconnect tests build on: the same server, a new pipe per attempt.
    let server = support::TestServer::new(ServerOptions::default());
    for attempt in 0..3 {
        let client = support::start_client(
            server.connect(),
            server.host_key(),
            &ClientOptions::default(),
        );
        within(STEP, "authentication", client.handle.authenticated())
            .await
            .unwrap();
        let ch = open(&client.handle, "db.internal").await;
        echo_check(ch, format!("attempt {attempt}").as_bytes())
            .await
            .unwrap();
        server.last().unwrap().kill();
        assert!(client.finished(STEP).await.is_err());
    }
    assert_eq!(server.connections().len(), 3);
    assert!(server.connections().iter().all(|c| c.stats().authenticated));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_frozen_mid_transfer_fails_blocked_writers_and_readers() {
    let client = ClientOptions {
        server_alive: Some(ALIVE),
        ..ClientOptions::default()
    };
    let (_server, conn, client) = connected(ServerOptions::default(), client).await;
    let ch = open(&client.handle, "db.internal").await;
    let (mut r, mut w) = tokio::io::split(ch);
    conn.freeze();
    // Write until blocked (the pipe and the windows fill), then wait: the keepalives cannot
    // even be sent, and the session is declared dead.
    let writer = tokio::spawn(async move {
        let data = pattern(5, 64 * 1024);
        loop {
            if let Err(e) = w.write_all(&data).await {
                return e;
            }
        }
    });
    let reader = tokio::spawn(async move {
        let mut b = vec![0u8; 64 * 1024];
        loop {
            match r.read(&mut b).await {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => return Some(e),
            }
        }
    });
    let end = client.finished(Duration::from_secs(10)).await;
    assert_eq!(end, Err(SessionError::ServerNotResponding { missed: 2 }));
    let e = within(Duration::from_secs(1), "the blocked writer", writer)
        .await
        .unwrap();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted, "{e}");
    let e = within(Duration::from_secs(1), "the reader", reader)
        .await
        .unwrap();
    assert_eq!(e.map(|e| e.kind()), Some(io::ErrorKind::ConnectionAborted));
    assert!(conn.stats().window_violations == 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_session_fails_a_writer_blocked_on_the_window() {
    let server = ServerOptions {
        window: 64 * 1024,
        ..ServerOptions::default()
    };
    let client = ClientOptions {
        connection: ssh_connection::Config {
            initial_window: 64 * 1024,
            max_packet: 32 * 1024,
        },
        ..ClientOptions::default()
    };
    let (_server, conn, client) = connected(server, client).await;
    let mut ch = open(&client.handle, "db.internal").await;
    let data = pattern(6, 16 * 1024);
    // Nothing is read: the writer blocks once both windows are full.
    let mut sent = 0;
    while let Ok(r) = tokio::time::timeout(Duration::from_millis(300), ch.write(&data)).await {
        sent += r.unwrap();
        assert!(sent <= 128 * 1024, "{sent}");
    }
    let writer = tokio::spawn(async move { ch.write(&data).await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!writer.is_finished());
    conn.kill();
    let r = within(Duration::from_secs(1), "the blocked writer", writer)
        .await
        .unwrap();
    assert_eq!(r.unwrap_err().kind(), io::ErrorKind::ConnectionAborted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_before_authentication_wait_for_it_or_fail_with_the_session() {
    // Waits, then works.
    let server = support::TestServer::new(ServerOptions::default());
    let client = support::start_client(
        server.connect(),
        server.host_key(),
        &ClientOptions::default(),
    );
    let ch = open(&client.handle, "db.internal").await;
    echo_check(ch, b"opened before authentication")
        .await
        .unwrap();

    // The server dies during the handshake: the pending open and `authenticated` fail.
    let server = support::TestServer::new(ServerOptions {
        start_frozen: true,
        ..ServerOptions::default()
    });
    let (stream, conn) = server.connect_with_handle();
    let client = support::start_client(stream, server.host_key(), &ClientOptions::default());
    let h = client.handle.clone();
    let pending = tokio::spawn(async move {
        h.open_direct_tcpip("db.internal", 5432, "127.0.0.1", 1)
            .await
            .map(|_| ())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!pending.is_finished());
    conn.kill();
    let r = within(Duration::from_secs(1), "the pending open", pending)
        .await
        .unwrap();
    assert!(matches!(r, Err(OpenError::Session(_))), "{r:?}");
    let a = within(
        Duration::from_secs(1),
        "authenticated()",
        client.handle.authenticated(),
    )
    .await;
    assert!(a.is_err(), "{a:?}");
    assert!(client.finished(STEP).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_hits_the_handshake_timeout() {
    let server = ServerOptions {
        start_frozen: true,
        ..ServerOptions::default()
    };
    let mut opts = ClientOptions::default();
    opts.transport.handshake_timeout = Some(Duration::from_secs(1));
    let server = support::TestServer::new(server);
    let client = support::start_client(server.connect(), server.host_key(), &opts);
    let t0 = Instant::now();
    let end = client.finished(Duration::from_secs(5)).await;
    assert!(
        matches!(
            end,
            Err(SessionError::Transport(
                ssh_transport::Error::HandshakeTimeout(_)
            ))
        ),
        "{end:?}"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_ends_the_driver_politely_and_the_channels_with_it() {
    let (_server, conn, client) =
        connected(ServerOptions::default(), ClientOptions::default()).await;
    let mut ch = open(&client.handle, "db.internal").await;
    client.handle.disconnect("bye");
    let end = client.finished(STEP).await;
    assert_eq!(end, Ok(()));
    let mut b = [0u8; 4];
    let r = within(
        Duration::from_secs(1),
        "read after disconnect",
        ch.read(&mut b),
    )
    .await;
    assert!(r.is_err(), "{r:?}");
    within(STEP, "the server to see the end", async {
        while conn.stats().ended.is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_driver_task_fails_its_channels() {
    let (_server, _conn, client) =
        connected(ServerOptions::default(), ClientOptions::default()).await;
    let mut ch = open(&client.handle, "db.internal").await;
    client.driver.abort();
    let mut b = [0u8; 4];
    let r = within(Duration::from_secs(1), "read after abort", ch.read(&mut b)).await;
    assert!(r.is_err(), "{r:?}");
    let o = within(
        Duration::from_secs(1),
        "open after abort",
        client
            .handle
            .open_direct_tcpip("db.internal", 1, "127.0.0.1", 1),
    )
    .await;
    assert!(matches!(o, Err(OpenError::Session(_))), "{o:?}");
}

/// Waits until no channel is left on either side.
/// The server starts a key exchange; waits until the client has completed it.
async fn rekey(conn: &support::ServerConn, h: &forwarder::driver::SessionHandle) {
    let before = h.log().kex_count;
    conn.rekey();
    within(STEP, "a rekey", async {
        while h.log().kex_count == before {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

async fn all_abandoned_closed(conn: &support::ServerConn, client: &support::Client) {
    within(STEP, "abandoned channels to close", async {
        while client.handle.channel_count() != 0 || conn.stats().open_now != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// A new channel still echoes, and the server saw nothing out of bounds.
async fn still_serves(conn: &support::ServerConn, client: &support::Client) {
    let ch = open(&client.handle, "db.internal").await;
    echo_check(ch, b"after the abandoned opens").await.unwrap();
    assert_clean(&conn.stats(), ServerOptions::default().window);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_given_up_before_confirmation_is_closed() {
    let (_server, conn, client) =
        connected(ServerOptions::default(), ClientOptions::default()).await;
    for _ in 0..20 {
        let h = client.handle.clone();
        let t = tokio::spawn(async move {
            h.open_direct_tcpip("db.internal", 5432, "127.0.0.1", 1)
                .await
                .map(|_| ())
        });
        tokio::task::yield_now().await;
        t.abort();
        let _ = t.await;
    }
    all_abandoned_closed(&conn, &client).await;
    still_serves(&conn, &client).await;
}

/// Counts the writes of channel data to the local socket and their bytes.
#[derive(Debug, Default)]
struct LocalWrites {
    calls: std::sync::atomic::AtomicU64,
    bytes: std::sync::atomic::AtomicU64,
}

impl forwarder::tunnel::TrafficObserver for LocalWrites {
    fn received_from_remote(&self, bytes: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.calls.fetch_add(1, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
    }
}

/// Polls `f` once with a waker that does nothing: its output if it was ready.
fn futures_poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::Pin::new(f).poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

#[tokio::test(flavor = "current_thread")]
async fn an_open_given_up_after_its_confirmation_was_handed_over_is_closed() {
    let (_server, conn, client) =
        connected(ServerOptions::default(), ClientOptions::default()).await;
    for round in 0..5u64 {
        let mut open = Box::pin(client.handle.open_direct_tcpip(
            "db.internal",
            5432,
            "127.0.0.1",
            1,
        ));
        // Polled once: the open goes out; then the caller looks away (a timeout, a select)
        // while the server confirms and the driver hands the confirmation over. On one
        // thread nothing else runs during that poll.
        let first = futures_poll_once(&mut open);
        assert!(
            first.is_none(),
            "round {round}: the open cannot be answered without a round trip: {:?}",
            first.map(|r| r.map(|_| ()))
        );
        within(STEP, "the server's confirmation", async {
            while conn.stats().opened <= round {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(open);
        all_abandoned_closed(&conn, &client).await;
    }
    still_serves(&conn, &client).await;
}

#[tokio::test(flavor = "current_thread")]
async fn packets_of_one_read_reach_the_local_socket_in_one_write_and_a_slow_reader_loses_nothing() {
    use std::sync::Arc;
    use std::sync::atomic::Ordering::Relaxed;
    // A pipe that holds several packets, so one read from the server carries several.
    let server_opts = ServerOptions {
        duplex_capacity: 512 * 1024,
        ..ServerOptions::default()
    };
    let (_server, conn, client) = connected(server_opts, ClientOptions::default()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut app = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (sock, peer) = listener.accept().await.unwrap();
    let channel = open(&client.handle, "db.internal").await;
    let writes = Arc::new(LocalWrites::default());
    let observer: Arc<dyn forwarder::tunnel::TrafficObserver> = writes.clone();
    let handle = client.handle.clone();
    let forwarding = tokio::spawn(async move {
        forwarder::tunnel::forward(
            Arc::new(sock.into()),
            peer.into(),
            &handle,
            channel,
            &observer,
        )
        .await
    });

    let data = pattern(21, 4 * MIB);
    let (mut from_app, mut to_app) = app.split();
    let write = async {
        to_app.write_all(&data).await?;
        to_app.shutdown().await
    };
    let read = async {
        // Nobody reads for a while: the local socket fills, the driver's write is partial
        // and the rest waits in the channel buffer for the connection's own task.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut got = Vec::with_capacity(data.len());
        from_app.read_to_end(&mut got).await?;
        Ok::<_, io::Error>(got)
    };
    let (written, got) = within(Duration::from_secs(60), "4 MiB through the tunnel", async {
        tokio::join!(write, read)
    })
    .await;
    written.expect("the app's writes");
    let got = got.expect("the app's reads");
    assert!(
        got == data,
        "the echo differs ({} of {} bytes)",
        got.len(),
        data.len()
    );
    within(STEP, "the connection ends", forwarding)
        .await
        .unwrap()
        .expect("forwarding ends cleanly");

    let packets = (4 * MIB).div_ceil(32 * 1024) as u64;
    let calls = writes.calls.load(Relaxed);
    assert_eq!(writes.bytes.load(Relaxed), data.len() as u64);
    assert!(
        calls * 2 <= packets,
        "{calls} writes for {packets} packets: reads of several packets are not written at once"
    );
    assert_clean(&conn.stats(), ServerOptions::default().window);
}

#[tokio::test(flavor = "current_thread")]
async fn a_connection_ends_when_its_app_closes_after_the_server_closed_with_data_still_buffered() {
    use std::sync::Arc;
    const DATA: usize = 4 * MIB;
    // The server answers 4 MiB and then closes the channel by itself, as a database that
    // closes after its last answer; the client's window takes all of it at once, so the
    // server's CLOSE comes while most of the answer waits in the channel buffer. No
    // keepalives: nothing else would ever come from the server.
    let server_opts = ServerOptions {
        close_after_echo: Some(DATA as u64),
        ..ServerOptions::default()
    };
    let client_opts = ClientOptions {
        connection: ssh_connection::Config {
            initial_window: 8 * MIB as u32,
            max_packet: 32 * 1024,
        },
        server_alive: None,
        ..ClientOptions::default()
    };
    let (_server, conn, client) = connected(server_opts, client_opts).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut app = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (sock, peer) = listener.accept().await.unwrap();
    // Small socket buffers: most of the answer cannot leave the channel buffer until the
    // app reads.
    socket2::SockRef::from(&app)
        .set_recv_buffer_size(64 * 1024)
        .unwrap();
    socket2::SockRef::from(&sock)
        .set_send_buffer_size(64 * 1024)
        .unwrap();
    let channel = open(&client.handle, "db.internal").await;
    let observer: Arc<dyn forwarder::tunnel::TrafficObserver> = Arc::new(LocalWrites::default());
    let handle = client.handle.clone();
    let forwarding = tokio::spawn(async move {
        forwarder::tunnel::forward(
            Arc::new(sock.into()),
            peer.into(),
            &handle,
            channel,
            &observer,
        )
        .await
    });

    // The app sends its request and keeps its side open, reading nothing until the server
    // has closed the channel.
    let data = pattern(33, DATA);
    within(
        Duration::from_secs(60),
        "the app's request",
        app.write_all(&data),
    )
    .await
    .expect("the app's writes");
    within(Duration::from_secs(60), "the server's CLOSE", async {
        while conn.stats().closes_in == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        conn.stats().bytes_out >= DATA as u64,
        "the server closed before it answered: {:?}",
        conn.stats()
    );

    // The app reads the whole answer, then closes its socket.
    let mut got = Vec::with_capacity(DATA);
    within(
        Duration::from_secs(60),
        "the answer",
        app.read_to_end(&mut got),
    )
    .await
    .expect("the app's reads");
    assert!(
        got == data,
        "the answer differs ({} of {DATA} bytes)",
        got.len()
    );
    drop(app);

    // The connection's task ends without anything more from the server.
    within(STEP, "the connection ends", forwarding)
        .await
        .unwrap()
        .expect("forwarding ends cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_gets_a_broken_pipe_once_the_server_has_closed_with_its_answer_unread() {
    // An application that writes its whole request before it reads (a buffered database
    // client): the server answers 64 KiB and closes the channel. Its answer stays unread,
    // so the channel has not ended, but no window will ever open again: the write must
    // fail, not wait for ever.
    const ANSWER: usize = 64 * 1024;
    let server_opts = ServerOptions {
        close_after_echo: Some(ANSWER as u64),
        ..ServerOptions::default()
    };
    let client_opts = ClientOptions {
        server_alive: None,
        ..ClientOptions::default()
    };
    let (_server, conn, client) = connected(server_opts, client_opts).await;
    let mut ch = open(&client.handle, "db.internal").await;

    // An empty write is done at once (before, it waited for a window that it does not need).
    let empty = within(STEP, "an empty write", ch.write(&[])).await;
    assert_eq!(empty.expect("an empty write"), 0);

    let data = pattern(41, 8 * MIB);
    let written = within(
        Duration::from_secs(20),
        "a write to a channel the server closed",
        ch.write_all(&data),
    )
    .await;
    let error = written.expect_err("8 MiB written to a channel closed after 64 KiB");
    assert_eq!(error.kind(), io::ErrorKind::BrokenPipe, "{error}");
    assert!(
        conn.stats().bytes_out >= ANSWER as u64,
        "{:?}",
        conn.stats()
    );

    // What the server answered before its CLOSE is all there, in order, then the end.
    let mut answer = Vec::new();
    within(
        Duration::from_secs(20),
        "the answer",
        ch.read_to_end(&mut answer),
    )
    .await
    .expect("the answer reads");
    assert!(answer.len() >= ANSWER, "{} bytes", answer.len());
    assert!(data.starts_with(&answer), "the answer is not the echo");
    assert!(client.handle.error().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_huge_write_under_a_huge_window_waits_for_the_output_instead_of_overflowing_it() {
    // A server may grant a window of 4 GiB. One write of 80 MiB must then be taken a part at
    // a time as the output drains, not framed at once past the session's 64 MiB output limit
    // (which fails the whole session).
    const DATA: usize = 80 * MIB;
    let server_opts = ServerOptions {
        window: u32::MAX,
        ..ServerOptions::default()
    };
    let (_server, conn, client) = connected(server_opts, ClientOptions::default()).await;
    let ch = open(&client.handle, "db.internal").await;
    let (mut reader, mut writer) = tokio::io::split(ch);
    let data = pattern(43, DATA);
    let reading = tokio::spawn(async move {
        let mut got = vec![0u8; DATA];
        reader.read_exact(&mut got).await.map(|_| got)
    });
    within(
        Duration::from_secs(120),
        "one 80 MiB write",
        writer.write_all(&data),
    )
    .await
    .expect("the write");
    let got = within(Duration::from_secs(120), "the echo", reading)
        .await
        .unwrap()
        .expect("the echo reads");
    assert!(got == data, "the echo differs");
    assert!(
        client.handle.error().is_none(),
        "{:?}",
        client.handle.error()
    );
    assert_eq!(conn.stats().bytes_in, DATA as u64);
}

#[tokio::test]
async fn server_closed_completes_at_the_servers_close_and_at_a_lost_session() {
    use std::sync::Arc;
    const DATA: usize = 100_000;
    // The server echoes DATA bytes, then closes the channel by itself.
    let server_opts = ServerOptions {
        close_after_echo: Some(DATA as u64),
        ..ServerOptions::default()
    };
    let (_server, _conn, client) = connected(server_opts, ClientOptions::default()).await;
    let channel = Arc::new(open(&client.handle, "db.internal").await);
    // Waits in a task of its own, which only the driver's wake-up can resume (no timer
    // shares its waker).
    let waiter = tokio::spawn({
        let channel = channel.clone();
        async move { channel.server_closed().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "completed while the channel is open");
    let data = pattern(41, DATA);
    let (mut r, mut w) = (&*channel, &*channel);
    within(STEP, "the request", w.write_all(&data))
        .await
        .expect("written");
    let mut got = vec![0u8; DATA];
    within(STEP, "the answer", r.read_exact(&mut got))
        .await
        .expect("read");
    assert!(got == data, "the echo differs");
    within(STEP, "the CLOSE", async {
        while !channel.closed_by_server() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    within(STEP, "server_closed woken by the CLOSE", waiter)
        .await
        .expect("the waiting task");
    assert!(!channel.session_failed());

    // A session that is lost wakes it too.
    let (_server, conn, client) =
        connected(ServerOptions::default(), ClientOptions::default()).await;
    let channel = Arc::new(open(&client.handle, "db.internal").await);
    let waiter = tokio::spawn({
        let channel = channel.clone();
        async move { channel.server_closed().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "completed while the session is up");
    conn.kill();
    within(STEP, "server_closed woken by the session's loss", waiter)
        .await
        .expect("the waiting task");
    assert!(channel.session_failed());
}

/// The server's version line is recorded even when the read that brought it also brought a
/// KEXINIT the session fails on (no key exchange in common): `forwarder check` tells "not an
/// SSH server" (stage 3) from "no algorithm in common" (stage 4) by it. The test server sends
/// both in one write, so the client reads them together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_line_read_with_a_kexinit_the_session_fails_on_is_still_recorded() {
    use ssh_transport::kex::KexAlgorithm;
    let mut server = ServerOptions::default();
    server.transport.kex = vec![KexAlgorithm::Curve25519Sha256];
    let mut client = ClientOptions::default();
    client.transport.kex_algorithms = vec![KexAlgorithm::EcdhNistP256];
    let server = support::TestServer::new(server);
    let c = support::start_client(server.connect(), server.host_key(), &client);
    let handle = c.handle.clone();
    let end = c.finished(Duration::from_secs(10)).await;
    assert!(
        matches!(end, Err(SessionError::Transport(ref e)) if e.to_string().contains("key exchange")),
        "{end:?}"
    );
    let log = handle.log();
    assert!(
        log.server_version
            .as_deref()
            .is_some_and(|v| v.starts_with("SSH-2.0-")),
        "the version line that came was not recorded: {log:?}"
    );
    assert!(log.version_time.is_some());
}
