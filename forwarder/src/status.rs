//! What the fleet shows of itself: one status per tunnel, for `/tunnels`, `/readyz` and the
//! metrics. The fleet owns the values; the admin endpoint only reads them through [`FleetView`].

use std::time::SystemTime;

use serde::Serialize;

/// A tunnel's state, as `/tunnels` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelState {
    /// No session was up yet since the tunnel started (for a remote tunnel: the bastion has
    /// not granted its forward yet).
    Connecting,
    /// Its session is up (for a remote tunnel: and the bastion listens for it).
    Up,
    /// Its session was up and is being replaced (for a remote tunnel: its forward was granted
    /// before and is being asked for again).
    Reconnecting,
    /// Only a person can fix it (a changed host key, a listener that cannot bind); retried on
    /// reload.
    Failed,
}

impl TunnelState {
    /// The name used in JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Up => "up",
            Self::Reconnecting => "reconnecting",
            Self::Failed => "failed",
        }
    }
}

/// The last probe of a tunnel's remote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProbeResult {
    /// Whether the expected service answered.
    pub ok: bool,
    /// When the probe finished (RFC 3339 in JSON).
    #[serde(serialize_with = "rfc3339")]
    pub at: SystemTime,
    /// What answered, or why it failed.
    pub detail: String,
}

/// One tunnel, as `/tunnels` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TunnelStatus {
    /// The tunnel's unique name.
    pub name: String,
    /// Where the platform connects (`127.0.0.1:15432`).
    pub local: String,
    /// Where the bastion connects (`db.internal:5432`).
    pub remote: String,
    /// `user@host:port` of the bastion.
    pub bastion: String,
    /// The state.
    pub state: TunnelState,
    /// Since when it is in that state (RFC 3339 in JSON).
    #[serde(serialize_with = "rfc3339")]
    pub since: SystemTime,
    /// Why the last attempt or session failed, if it did.
    pub last_error: Option<String>,
    /// Connections open now.
    pub active_connections: u64,
    /// Connections accepted since the tunnel started.
    pub connections_total: u64,
    /// Bytes from local clients to the remote.
    pub bytes_to_remote: u64,
    /// Bytes from the remote to local clients.
    pub bytes_from_remote: u64,
    /// The last probe, if one ran.
    pub probe: Option<ProbeResult>,
}

/// Read access to a running fleet, for the admin endpoint.
pub trait FleetView: Send + Sync + 'static {
    /// Whether the file is loaded, every listener is bound and the fleet is not stopping
    /// (`/readyz`).
    fn ready(&self) -> bool;
    /// Why it is not ready, for the body of `/readyz`'s 503 (asked only when [`ready`] is
    /// false).
    ///
    /// [`ready`]: FleetView::ready
    fn not_ready_reason(&self) -> String {
        "the tunnels file is not loaded yet, a listener is not bound, or the fleet is stopping"
            .into()
    }
    /// Every tunnel, in the file's order.
    fn tunnels(&self) -> Vec<TunnelStatus>;
    /// Every tunnel's state, in the file's order: what `/metrics` counts when it is scraped
    /// (`forwarder_tunnels`), without the rest of [`tunnels`](FleetView::tunnels).
    fn tunnel_states(&self) -> Vec<TunnelState> {
        self.tunnels().iter().map(|t| t.state).collect()
    }
}

/// `t` as RFC 3339 in UTC with seconds (`2026-12-04T10:11:12Z`).
pub fn format_rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's civil algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_rfc3339(*t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(
            format_rfc3339(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00Z"
        );
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_378_400);
        assert_eq!(format_rfc3339(t), "2026-12-04T10:00:00Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_825_599);
        assert_eq!(format_rfc3339(leap), "2000-02-29T11:59:59Z");
    }

    #[test]
    fn status_serializes_with_the_documented_fields() {
        let s = TunnelStatus {
            name: "acme-pg".into(),
            local: "127.0.0.1:15432".into(),
            remote: "db.internal:5432".into(),
            bastion: "u@b:22".into(),
            state: TunnelState::Reconnecting,
            since: SystemTime::UNIX_EPOCH,
            last_error: None,
            active_connections: 1,
            connections_total: 2,
            bytes_to_remote: 3,
            bytes_from_remote: 4,
            probe: Some(ProbeResult {
                ok: true,
                at: SystemTime::UNIX_EPOCH,
                detail: "postgres: TLS".into(),
            }),
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["state"], "reconnecting");
        assert_eq!(v["since"], "1970-01-01T00:00:00Z");
        assert!(v["last_error"].is_null());
        assert_eq!(v["probe"]["ok"], true);
        assert_eq!(v["probe"]["at"], "1970-01-01T00:00:00Z");
    }
}
