//! The ssh-agent's Unix socket: one connection per request, framed and bounded by
//! `ssh_auth::agent`, each request under a time limit.
//!
//! ```text
//!  list_identities ──connect──> REQUEST_IDENTITIES ──> IDENTITIES_ANSWER (≤ 256 KiB) ──> keys
//!  sign(request) ───connect──> SIGN_REQUEST (RSA SHA-2 flags) ──> SIGN_RESPONSE ──> blob
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use ssh_auth::agent::{self, AgentError, AgentRequest, AgentResponse};
use ssh_transport::hostkey::SignatureAlgorithm;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::cli::IdentityAgent;

/// How long listing the keys may take.
pub const LIST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a signature may take: an agent may ask for a confirmation or a touch of a
/// hardware token first.
pub const SIGN_TIMEOUT: Duration = Duration::from_secs(60);

/// One key the agent holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentKey {
    /// The public key or certificate blob.
    pub blob: Vec<u8>,
    /// The comment, sanitized.
    pub comment: String,
}

/// Where the agent is, from `IdentityAgent` and the environment: `None` for no agent.
pub fn socket_path(
    setting: &IdentityAgent,
    var: &dyn Fn(&str) -> Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    let from_env = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    match setting {
        IdentityAgent::None => None,
        IdentityAgent::AuthSock => from_env("SSH_AUTH_SOCK"),
        IdentityAgent::Env(name) => from_env(name),
        IdentityAgent::Path(p) => Some(p.clone()),
    }
}

/// A client of the agent at a socket path.
#[derive(Clone, Debug)]
pub struct AgentClient {
    path: PathBuf,
    list_timeout: Duration,
    sign_timeout: Duration,
}

impl AgentClient {
    /// The agent listening at `path`, with the usual time limits.
    pub fn new(path: PathBuf) -> Self {
        Self::with_timeouts(path, LIST_TIMEOUT, SIGN_TIMEOUT)
    }

    /// The agent listening at `path`, with other time limits for listing and signing.
    pub fn with_timeouts(path: PathBuf, list: Duration, sign: Duration) -> Self {
        Self {
            path,
            list_timeout: list,
            sign_timeout: sign,
        }
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The keys the agent holds, in its order.
    pub async fn list_identities(&self) -> Result<Vec<AgentKey>, String> {
        let mut frame = Vec::new();
        AgentRequest::RequestIdentities.encode_frame(&mut frame);
        let body = self.exchange(&frame, self.list_timeout).await?;
        let keys = AgentResponse::decode(&body)
            .and_then(AgentResponse::into_identities)
            .map_err(|e| e.to_string())?;
        Ok(keys
            .iter()
            .map(|k| AgentKey {
                blob: k.key_blob.to_vec(),
                comment: k.comment_text(),
            })
            .collect())
    }

    /// Asks the agent to sign `data` with the key (or certificate) `key_blob`, a blob it
    /// listed: it finds keys by their exact blob. Returns the whole signature blob.
    pub async fn sign(
        &self,
        key_blob: &[u8],
        data: &[u8],
        algorithm: SignatureAlgorithm,
    ) -> Result<Vec<u8>, String> {
        let mut frame = Vec::new();
        AgentRequest::Sign {
            key_blob,
            data,
            flags: agent::sign_flags(algorithm),
        }
        .encode_frame(&mut frame);
        let body = self.exchange(&frame, self.sign_timeout).await?;
        AgentResponse::decode(&body)
            .and_then(|r| r.into_signature().map(<[u8]>::to_vec))
            .map_err(|e| e.to_string())
    }

    /// Sends one request frame and reads one answer, its length checked before the body is
    /// allocated.
    async fn exchange(&self, frame: &[u8], limit: Duration) -> Result<Vec<u8>, String> {
        let path = self.path.display().to_string();
        let io = async {
            let mut sock = tokio::net::UnixStream::connect(&self.path)
                .await
                .map_err(|e| format!("cannot connect to the agent at {path}: {e}"))?;
            sock.write_all(frame)
                .await
                .map_err(|e| format!("writing to the agent at {path}: {e}"))?;
            let mut header = [0u8; 4];
            sock.read_exact(&mut header)
                .await
                .map_err(|e| format!("reading from the agent at {path}: {e}"))?;
            let len = agent::frame_length(header).map_err(|e: AgentError| e.to_string())?;
            let mut body = vec![0u8; len];
            sock.read_exact(&mut body)
                .await
                .map_err(|e| format!("reading from the agent at {path}: {e}"))?;
            Ok(body)
        };
        tokio::time::timeout(limit, io).await.map_err(|_| {
            format!(
                "the agent at {path} did not answer within {:.1} s",
                limit.as_secs_f64()
            )
        })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssh_auth::agent::AgentIdentity;
    use std::ffi::OsString;
    use tokio::net::UnixListener;

    /// A one-connection-per-answer agent that sends `answers` in turn, recording requests.
    async fn fake_agent(
        dir: &Path,
        answers: Vec<Vec<u8>>,
    ) -> (PathBuf, tokio::task::JoinHandle<Vec<Vec<u8>>>) {
        let path = dir.join("agent.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let task = tokio::spawn(async move {
            let mut requests = Vec::new();
            for answer in answers {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut header = [0u8; 4];
                sock.read_exact(&mut header).await.unwrap();
                let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
                sock.read_exact(&mut body).await.unwrap();
                requests.push(body);
                let _ = sock.write_all(&answer).await;
            }
            requests
        });
        (path, task)
    }

    #[test]
    fn socket_from_setting_and_environment() {
        let env = |name: &str| match name {
            "SSH_AUTH_SOCK" => Some(OsString::from("/run/agent")),
            "OTHER" => Some(OsString::from("/run/other")),
            "EMPTY" => Some(OsString::new()),
            _ => None,
        };
        assert_eq!(
            socket_path(&IdentityAgent::AuthSock, &env),
            Some(PathBuf::from("/run/agent"))
        );
        assert_eq!(socket_path(&IdentityAgent::None, &env), None);
        assert_eq!(
            socket_path(&IdentityAgent::Env("OTHER".into()), &env),
            Some(PathBuf::from("/run/other"))
        );
        assert_eq!(socket_path(&IdentityAgent::Env("EMPTY".into()), &env), None);
        assert_eq!(
            socket_path(&IdentityAgent::Path("/p".into()), &env),
            Some(PathBuf::from("/p"))
        );
    }

    #[tokio::test]
    async fn lists_keys_and_signs_with_the_sha2_flag() {
        let dir = tempfile::tempdir().unwrap();
        let mut list = Vec::new();
        AgentResponse::Identities(vec![AgentIdentity {
            key_blob: b"KEY",
            comment: b"me@host\x1b",
        }])
        .encode_frame(&mut list);
        let mut sig = Vec::new();
        AgentResponse::Signature(b"SIG").encode_frame(&mut sig);
        let (path, agent) = fake_agent(dir.path(), vec![list, sig]).await;
        let client = AgentClient::new(path);
        let keys = client.list_identities().await.unwrap();
        assert_eq!(
            keys,
            [AgentKey {
                blob: b"KEY".to_vec(),
                comment: "me@host\\x1b".into()
            }]
        );
        let blob = client
            .sign(b"KEY", b"DATA", SignatureAlgorithm::RsaSha512)
            .await
            .unwrap();
        assert_eq!(blob, b"SIG");
        let requests = agent.await.unwrap();
        assert_eq!(requests[0], [11]);
        assert_eq!(
            AgentRequest::decode(&requests[1]).unwrap(),
            AgentRequest::Sign {
                key_blob: b"KEY",
                data: b"DATA",
                flags: 4
            }
        );
    }

    #[tokio::test]
    async fn hostile_agents_are_refused_without_allocating() {
        let dir = tempfile::tempdir().unwrap();
        // A frame claiming 2 GiB, then a list claiming a million keys in a few bytes.
        let huge = vec![0x7f, 0xff, 0xff, 0xff, 12];
        let mut counts = vec![0, 0, 0, 9, 12, 0, 0x0f, 0x42, 0x40];
        counts.extend_from_slice(&[0; 4]);
        let (path, agent) = fake_agent(dir.path(), vec![huge, counts, vec![0, 0, 0, 1, 5]]).await;
        let client = AgentClient::new(path);
        let e = client.list_identities().await.unwrap_err();
        assert!(e.contains("more than the 262144 allowed"), "{e}");
        let e = client.list_identities().await.unwrap_err();
        assert!(e.contains("claims 1000000 keys"), "{e}");
        let e = client
            .sign(b"K", b"D", SignatureAlgorithm::Ed25519)
            .await
            .unwrap_err();
        assert!(e.contains("the agent refused to sign"), "{e}");
        agent.await.unwrap();
    }

    #[tokio::test]
    async fn a_silent_agent_times_out_and_a_missing_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = AgentClient::new(dir.path().join("nothing.sock"));
        let e = missing.list_identities().await.unwrap_err();
        assert!(e.starts_with("cannot connect to the agent at "), "{e}");
        let path = dir.path().join("silent.sock");
        let _listener = UnixListener::bind(&path).unwrap();
        let silent =
            AgentClient::with_timeouts(path, Duration::from_millis(100), Duration::from_secs(1));
        let e = silent.list_identities().await.unwrap_err();
        assert!(e.contains("did not answer within 0.1 s"), "{e}");
    }
}
