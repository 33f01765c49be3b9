//! Reads a MySQL or MariaDB server's greeting through the bastion, with no local port.
//!
//! ```text
//! BASTION=bastion.example.com BASTION_USER=analytics BASTION_IDENTITY=~/.ssh/id_ed25519 \
//!     MYSQL_HOST=db.internal MYSQL_PORT=3306 cargo run -p forwarder --example mysql_greeting
//! ```
//! Settings (environment): `BASTION`, `BASTION_PORT` (22), `BASTION_USER`, `BASTION_IDENTITY`
//! (a private key file), `BASTION_KNOWN_HOSTS` (`~/.ssh/known_hosts` unless given),
//! `MYSQL_HOST`, `MYSQL_PORT` (3306). Prints `protocol <n>, server <version>, connection
//! <id>` and exits 0; on an error, prints it and exits 1.

use std::time::Duration;

use forwarder::config::TunnelConfig;
use forwarder::dial::Dialer;
use tokio::io::AsyncReadExt;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn var(name: &str) -> Result<String, Error> {
    std::env::var(name).map_err(|_| format!("set {name}").into())
}

fn port(name: &str, default: u16) -> Result<u16, Error> {
    match std::env::var(name) {
        Ok(v) => v.parse().map_err(|e| format!("{name}: {e}").into()),
        Err(_) => Ok(default),
    }
}

/// The bastion's settings from the environment.
fn tunnel_config() -> Result<TunnelConfig, Error> {
    let mut b = TunnelConfig::builder(var("BASTION")?, var("BASTION_USER")?)
        .port(port("BASTION_PORT", 22)?)
        .session_wait_timeout(Duration::from_secs(20));
    if let Ok(key) = std::env::var("BASTION_IDENTITY") {
        b = b.identity_file(key);
    }
    if let Ok(known) = std::env::var("BASTION_KNOWN_HOSTS") {
        b = b.known_hosts_file(known);
    }
    Ok(b.build()?)
}

/// The fields of a MySQL protocol 10 greeting that are printed.
struct Greeting {
    protocol: u8,
    version: String,
    connection_id: u32,
}

/// Reads one packet (3-byte little-endian length, sequence number, payload) and decodes the
/// start of the initial handshake.
async fn read_greeting<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Result<Greeting, Error> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).await?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
    if len == 0 || len > 64 * 1024 {
        return Err(format!("not a MySQL greeting (a packet of {len} bytes)").into());
    }
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await?;
    let protocol = payload[0];
    if protocol == 0xff {
        let message = String::from_utf8_lossy(payload.get(3..).unwrap_or_default());
        return Err(format!("the server refused the connection: {message}").into());
    }
    let rest = &payload[1..];
    let end = rest
        .iter()
        .position(|&b| b == 0)
        .ok_or("the server version is not terminated")?;
    let version = String::from_utf8_lossy(&rest[..end]).into_owned();
    let id = rest
        .get(end + 1..end + 5)
        .ok_or("the greeting ends before the connection id")?;
    Ok(Greeting {
        protocol,
        version,
        connection_id: u32::from_le_bytes([id[0], id[1], id[2], id[3]]),
    })
}

async fn run() -> Result<(), Error> {
    let dialer = Dialer::start(tunnel_config()?).await?;
    let mut stream = dialer
        .dial(&var("MYSQL_HOST")?, port("MYSQL_PORT", 3306)?)
        .await?;
    let greeting = tokio::time::timeout(Duration::from_secs(20), read_greeting(&mut stream))
        .await
        .map_err(|_| "no greeting within 20 s")??;
    println!(
        "protocol {}, server {}, connection {}",
        greeting.protocol, greeting.version, greeting.connection_id
    );
    // Closing the channel before logging in: the server sees an aborted handshake.
    drop(stream);
    dialer.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        // The whole chain: a TLS failure's reason is in its source.
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            message.push_str(&format!(": {s}"));
            source = s.source();
        }
        eprintln!("mysql_greeting: {message}");
        std::process::exit(1);
    }
}
