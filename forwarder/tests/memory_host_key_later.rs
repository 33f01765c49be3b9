//! A host key check that answers later (`HostKeyVerifier::verify_later`, what a
//! `KnownHostsCommand` needs) against the in-memory server of `support`: the session waits
//! for the verdict while the driver runs, then goes on when the key is trusted, fails for good
//! when it is refused, and ends with an error a tunnel retries when the check could not be
//! made.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use forwarder::driver::{self, HostKeyVerifier, Verdict, VerdictFuture};
use forwarder::session::SessionError;
use ssh_transport::hostkey::PublicKey;
use support::*;
use tokio::sync::oneshot;

/// A verifier whose verdict the test gives, once the session has asked for it.
struct Later {
    /// The key the session asked about, once it did.
    asked: Arc<Mutex<Option<PublicKey>>>,
    /// Where the verdict comes from.
    verdict: Mutex<Option<oneshot::Receiver<Verdict>>>,
}

impl HostKeyVerifier for Later {
    fn verify(&self, _key: &PublicKey) -> Result<(), String> {
        Err("verify_later must have been used".to_owned())
    }

    fn verify_later(
        self: Arc<Self>,
        key: &PublicKey,
        _certificate: Option<&ssh_transport::cert::Certificate>,
    ) -> Option<VerdictFuture> {
        *self.asked.lock().expect("lock") = Some(key.clone());
        let verdict = self.verdict.lock().expect("lock").take()?;
        Some(Box::pin(async move {
            verdict
                .await
                .unwrap_or_else(|_| Verdict::Unchecked("no verdict".into()))
        }))
    }
}

/// A client whose host key check waits for the verdict sent on the returned sender.
fn client_waiting_for(
    server: &Arc<TestServer>,
) -> (
    Client,
    ServerConn,
    oneshot::Sender<Verdict>,
    Arc<Mutex<Option<PublicKey>>>,
) {
    let (tell, verdict) = oneshot::channel();
    let asked = Arc::new(Mutex::new(None));
    let verifier = Later {
        asked: asked.clone(),
        verdict: Mutex::new(Some(verdict)),
    };
    let (stream, conn) = server.connect_with_handle();
    let (handle, driver) = driver::start(
        stream,
        session(&ClientOptions::default()),
        Arc::new(verifier),
    );
    let client = Client {
        handle,
        driver: tokio::spawn(driver),
    };
    (client, conn, tell, asked)
}

/// Waits (bounded) until the session has asked about the server's key.
async fn asked_about(asked: &Arc<Mutex<Option<PublicKey>>>) -> PublicKey {
    within(STEP, "the host key check to be asked for", async {
        loop {
            if let Some(key) = asked.lock().expect("lock").clone() {
                return key;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

#[tokio::test]
async fn a_trusted_verdict_given_later_lets_the_session_go_on() {
    let server = TestServer::new(ServerOptions::default());
    let (client, _conn, tell, asked) = client_waiting_for(&server);
    assert_eq!(asked_about(&asked).await, server.host_key());
    // The session waits: no login while the check runs.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(50), client.handle.authenticated())
            .await
            .is_err(),
        "logged in before the verdict"
    );
    assert!(tell.send(Verdict::Trusted).is_ok());
    within(STEP, "authentication", client.handle.authenticated())
        .await
        .expect("authenticated");
    let ch = within(
        STEP,
        "a channel",
        client
            .handle
            .open_direct_tcpip("db.internal", 5432, "127.0.0.1", 40000),
    )
    .await
    .expect("channel opens");
    echo_check(ch, &pattern(3, 100_000)).await.expect("echo");
}

#[tokio::test]
async fn a_refused_verdict_fails_the_session_for_good() {
    let server = TestServer::new(ServerOptions::default());
    let (client, _conn, tell, asked) = client_waiting_for(&server);
    asked_about(&asked).await;
    assert!(tell.send(Verdict::Refused("listed wrong".into())).is_ok());
    let end = client.finished(STEP).await;
    assert_eq!(
        end,
        Err(SessionError::Transport(
            ssh_transport::Error::HostKeyRejected("listed wrong".into())
        ))
    );
    assert!(forwarder::supervisor::is_permanent(&end.unwrap_err()));
}

#[tokio::test]
async fn a_check_that_could_not_be_made_ends_the_session_to_be_retried() {
    let server = TestServer::new(ServerOptions::default());
    let (client, _conn, tell, asked) = client_waiting_for(&server);
    asked_about(&asked).await;
    assert!(
        tell.send(Verdict::Unchecked("vault: sealed".into()))
            .is_ok()
    );
    let end = client.finished(STEP).await;
    assert_eq!(
        end,
        Err(SessionError::HostKeyUnchecked("vault: sealed".into()))
    );
    assert!(!forwarder::supervisor::is_permanent(&end.unwrap_err()));
}
