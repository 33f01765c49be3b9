//! Queries PostgreSQL through the bastion with `tokio-postgres` over a dialed stream: no
//! local port. With `PG_SSLROOTCERT` set, the session inside the channel is TLS and the
//! server's certificate is checked against that CA and the database's name, as libpq's
//! `sslmode=verify-full` does.
//!
//! ```text
//! BASTION=bastion.example.com BASTION_USER=analytics BASTION_IDENTITY=~/.ssh/id_ed25519 \
//!     PG_HOST=db.internal PG_USER=app PG_PASSWORD=... PG_DBNAME=appdb \
//!     PG_SSLROOTCERT=ca.pem cargo run -p forwarder --example dial_postgres -- 'SELECT 1'
//! ```
//! Settings (environment): `BASTION`, `BASTION_PORT` (22), `BASTION_USER`,
//! `BASTION_IDENTITY` (a private key file), `BASTION_KNOWN_HOSTS` (`~/.ssh/known_hosts`
//! unless given); `PG_HOST` (the name the bastion connects to), `PG_PORT` (5432),
//! `PG_USER`, `PG_PASSWORD`, `PG_DBNAME`; for TLS, `PG_SSLROOTCERT` (the CA's PEM file) and
//! `PG_TLS_NAME` (the name the certificate must carry; `PG_HOST` unless given). The first
//! argument is the query (`SELECT 1` unless given). Each row is printed as psql `-At`
//! would: its columns as text, separated by `|`. Exits 1 on an error.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use forwarder::config::TunnelConfig;
use forwarder::dial::Dialer;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, NoTls, TlsConnect, TlsStream};
use tokio_postgres::{Client, Config, SimpleQueryMessage};

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

/// TLS for tokio-postgres with rustls: the certificate must chain to `roots` and name
/// `name` (verify-full).
struct RustlsConnect {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl RustlsConnect {
    fn new(ca_file: &str, name: &str) -> Result<Self, Error> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in
            CertificateDer::pem_file_iter(ca_file).map_err(|e| format!("reading {ca_file}: {e}"))?
        {
            roots.add(cert.map_err(|e| format!("reading {ca_file}: {e}"))?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            config: Arc::new(config),
            name: ServerName::try_from(name.to_owned())?,
        })
    }
}

/// The TLS stream tokio-postgres reads and writes.
struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.config);
        Box::pin(async move {
            let tls = connector.connect(self.name, stream).await?;
            Ok(RustlsStream(tls))
        })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Runs `sql` and prints its rows.
async fn query(client: &Client, sql: &str) -> Result<(), Error> {
    for message in client.simple_query(sql).await? {
        if let SimpleQueryMessage::Row(row) = message {
            let columns: Vec<&str> = (0..row.len()).map(|i| row.get(i).unwrap_or("")).collect();
            println!("{}", columns.join("|"));
        }
    }
    Ok(())
}

async fn run() -> Result<(), Error> {
    let sql = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "SELECT 1".to_owned());
    let host = var("PG_HOST")?;
    let mut pg = Config::new();
    pg.user(var("PG_USER")?).dbname(var("PG_DBNAME")?);
    if let Ok(password) = std::env::var("PG_PASSWORD") {
        pg.password(password);
    }

    let dialer = Dialer::start(tunnel_config()?).await?;
    let stream = dialer.dial(&host, port("PG_PORT", 5432)?).await?;
    let work = async {
        match std::env::var("PG_SSLROOTCERT") {
            Ok(ca) => {
                let name = std::env::var("PG_TLS_NAME").unwrap_or_else(|_| host.clone());
                pg.ssl_mode(tokio_postgres::config::SslMode::Require);
                let tls = RustlsConnect::new(&ca, &name)?;
                let (client, connection) = pg.connect_raw(stream, tls).await?;
                let driver = tokio::spawn(connection);
                query(&client, &sql).await?;
                drop(client);
                driver.await??;
            }
            Err(_) => {
                pg.ssl_mode(tokio_postgres::config::SslMode::Disable);
                let (client, connection) = pg.connect_raw(stream, NoTls).await?;
                let driver = tokio::spawn(connection);
                query(&client, &sql).await?;
                drop(client);
                driver.await??;
            }
        }
        Ok::<(), Error>(())
    };
    let result = tokio::time::timeout(Duration::from_secs(30), work)
        .await
        .map_err(|_| Error::from("the query did not finish within 30 s"))
        .and_then(|r| r);
    dialer.shutdown().await;
    result
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
        eprintln!("dial_postgres: {message}");
        std::process::exit(1);
    }
}
