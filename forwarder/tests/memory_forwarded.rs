//! `forwarded-tcpip` channels through the tokio driver against the in-memory test server of
//! `support`: a channel the server opens for a remote forward stays unconfirmed until the
//! program confirms it (after its local connect, as OpenSSH's client does), and a refused or
//! dropped one gets OPEN_FAILURE, never a CLOSE. Every wait is bounded.

mod support;

use std::time::Duration;

use forwarder::driver::{ForwardedChannel, OpenError, SessionHandle};
use forwarder::session::SessionError;
use ssh_connection::{ForwardListen, OpenFailureReason};
use support::{ClientOptions, STEP, ServerConn, ServerOptions, connected, echo_check, within};

/// Long enough for the driver to have sent anything it was going to send by itself.
const SETTLE: Duration = Duration::from_millis(300);

/// Has the forward `localhost:0` granted, has the server open one channel for it and
/// returns that channel as the program gets it.
async fn forwarded(handle: &SessionHandle, conn: &ServerConn) -> ForwardedChannel {
    let port = within(
        STEP,
        "the forward",
        handle.request_remote_forward(ForwardListen::tcp("localhost", 0)),
    )
    .await
    .expect("granted");
    assert_eq!(port, 40000);
    conn.open_forwarded("localhost", port);
    let ch = within(STEP, "the forwarded channel", handle.accept_forwarded())
        .await
        .expect("a channel");
    assert_eq!(
        (&ch.from.listen, ch.from.bound_port),
        (&ForwardListen::tcp("localhost", 0), 40000)
    );
    assert_eq!(ch.from.bound(), ForwardListen::tcp("localhost", 40000));
    ch
}

/// Waits (bounded) until the server's stats satisfy `done`.
async fn server_sees(conn: &ServerConn, what: &str, done: impl Fn(&support::ServerStats) -> bool) {
    within(STEP, what, async {
        while !done(&conn.stats()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_forwarded_channel_is_confirmed_only_when_the_program_confirms_it() {
    let (_server, conn, client) =
        connected(ServerOptions::default(), ClientOptions::default()).await;
    let ch = forwarded(&client.handle, &conn).await;
    tokio::time::sleep(SETTLE).await;
    let stats = conn.stats();
    assert_eq!(
        stats.forwarded_confirmed, 0,
        "confirmed before the program said so"
    );
    assert!(stats.forwarded_refused.is_empty(), "{stats:?}");
    assert_eq!(client.handle.channel_count(), 1, "pending channels count");

    let stream = ch.confirm().expect("confirmed");
    server_sees(&conn, "the confirmation", |s| s.forwarded_confirmed == 1).await;
    // From then on it carries data like any channel.
    within(
        STEP,
        "the echo",
        echo_check(stream, &support::pattern(3, 300_000)),
    )
    .await
    .expect("echoed");
    let stats = conn.stats();
    assert_eq!(
        (stats.before_answer, stats.window_violations),
        (0, 0),
        "{stats:?}"
    );
}

#[tokio::test]
async fn a_refused_forwarded_channel_gets_open_failure_and_no_close() {
    let (_server, conn, client) =
        connected(ServerOptions::default(), ClientOptions::default()).await;
    let ch = forwarded(&client.handle, &conn).await;
    ch.refuse(OpenFailureReason::CONNECT_FAILED, "Connection refused");
    server_sees(&conn, "the refusal", |s| !s.forwarded_refused.is_empty()).await;
    tokio::time::sleep(SETTLE).await;
    let stats = conn.stats();
    assert_eq!(
        stats.forwarded_refused,
        vec![(
            OpenFailureReason::CONNECT_FAILED,
            "Connection refused".to_owned()
        )]
    );
    assert_eq!(
        (
            stats.forwarded_confirmed,
            stats.closes_in,
            stats.before_answer
        ),
        (0, 0, 0),
        "{stats:?}"
    );
    assert_eq!(client.handle.channel_count(), 0);
    // The session carries on: the next channel for the forward is served.
    let next = forwarded(&client.handle, &conn).await;
    let stream = next.confirm().expect("confirmed");
    within(STEP, "the echo", echo_check(stream, b"still here"))
        .await
        .expect("echoed");
}

#[tokio::test]
async fn a_forwarded_channel_dropped_unanswered_is_refused() {
    let (_server, conn, client) =
        connected(ServerOptions::default(), ClientOptions::default()).await;
    let ch = forwarded(&client.handle, &conn).await;
    drop(ch);
    server_sees(&conn, "the refusal", |s| !s.forwarded_refused.is_empty()).await;
    let stats = conn.stats();
    assert_eq!(
        stats.forwarded_refused,
        vec![(
            OpenFailureReason::ADMINISTRATIVELY_PROHIBITED,
            "open failed".to_owned()
        )]
    );
    assert_eq!((stats.forwarded_confirmed, stats.closes_in), (0, 0));
    assert_eq!(client.handle.channel_count(), 0);
}

#[tokio::test]
async fn confirming_after_the_session_ended_fails_with_the_session_error() {
    let (_server, conn, client) =
        connected(ServerOptions::default(), ClientOptions::default()).await;
    let ch = forwarded(&client.handle, &conn).await;
    conn.kill();
    within(STEP, "the session to end", client.handle.ended()).await;
    assert!(ch.session_failed());
    match ch.confirm() {
        Err(OpenError::Session(SessionError::Transport(_))) => {}
        other => panic!("expected the session's error, got {other:?}"),
    }
}

// A forward from a socket on the server (streamlocal-forward): granted with no port, its
// channel names the path and no originator, carries data once confirmed, and after the
// cancel the server's next open for the path is refused.
#[tokio::test]
async fn a_forward_from_a_socket_on_the_server_is_served_until_cancelled() {
    let (_server, conn, client) =
        connected(ServerOptions::default(), ClientOptions::default()).await;
    let socket = ForwardListen::unix("/run/fwd.sock");
    let port = within(
        STEP,
        "the forward",
        client.handle.request_remote_forward(socket.clone()),
    )
    .await
    .expect("granted");
    assert_eq!(port, 0, "a socket has no port");
    conn.open_forwarded_socket("/run/fwd.sock");
    let ch = within(
        STEP,
        "the forwarded channel",
        client.handle.accept_forwarded(),
    )
    .await
    .expect("a channel");
    assert_eq!(ch.from.listen, socket);
    assert_eq!(ch.from.bound(), socket);
    assert_eq!(
        (ch.from.originator.as_str(), ch.from.originator_port),
        ("", 0)
    );
    let stream = ch.confirm().expect("confirmed");
    within(
        STEP,
        "the echo",
        echo_check(stream, &support::pattern(5, 100_000)),
    )
    .await
    .expect("echoed");

    assert!(client.handle.cancel_remote_forward(&socket));
    assert!(
        !client.handle.cancel_remote_forward(&socket),
        "cancelled twice"
    );
    conn.open_forwarded_socket("/run/fwd.sock");
    server_sees(&conn, "the refusal", |s| !s.forwarded_refused.is_empty()).await;
    assert_eq!(
        conn.stats().forwarded_refused[0].0,
        OpenFailureReason::ADMINISTRATIVELY_PROHIBITED
    );
    assert_eq!(conn.stats().forwarded_confirmed, 1);
}
