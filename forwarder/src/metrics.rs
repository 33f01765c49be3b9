//! The fleet's Prometheus metrics, served by the admin endpoint at `/metrics`.
//!
//! [`Metrics`] owns one registry. The fleet asks it for a [`TunnelMetrics`] per tunnel and a
//! [`SessionMetrics`] per SSH session: cheap clonable handles, so the forwarding path only
//! bumps atomics. A tunnel or session that goes away is removed with
//! [`Metrics::remove_tunnel`] / [`Metrics::remove_session`], and its series disappear from the
//! next scrape.
//!
//! The output is the Prometheus text format 0.0.4 (what `promtool check metrics` checks), not
//! OpenMetrics.

use std::time::SystemTime;

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use tracing::warn;

use crate::status::TunnelState;

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Buckets of the SSH handshake time (TCP connect to authenticated), 10 ms to 30 s.
const HANDSHAKE_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Buckets of the keepalive round trip, 1 ms to 10 s.
const KEEPALIVE_RTT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets of the wait for a handshake's turn at its bastion, 1 ms to 60 s.
const GATE_WAIT_BUCKETS: &[f64] = &[
    0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Every state, for `forwarder_tunnels{state}`.
const STATES: [TunnelState; 4] = [
    TunnelState::Connecting,
    TunnelState::Up,
    TunnelState::Reconnecting,
    TunnelState::Failed,
];

/// The `direction` label of the byte counters.
const TO_REMOTE: &str = "to_remote";
const FROM_REMOTE: &str = "from_remote";

/// The handles of one tunnel's series (label `tunnel`).
#[derive(Clone, Debug)]
pub struct TunnelMetrics {
    /// `forwarder_tunnel_up`: 1 while `/tunnels` shows the tunnel `up`.
    pub up: IntGauge,
    /// `forwarder_tunnel_connections_total`: connections accepted.
    pub connections_total: IntCounter,
    /// `forwarder_tunnel_active_connections`: connections open now.
    pub active_connections: IntGauge,
    /// `forwarder_tunnel_bytes_total{direction="to_remote"}`.
    pub bytes_to_remote: IntCounter,
    /// `forwarder_tunnel_bytes_total{direction="from_remote"}`.
    pub bytes_from_remote: IntCounter,
    /// `forwarder_tunnel_probe_success`: 1 when the last probe succeeded.
    pub probe_success: IntGauge,
    /// `forwarder_tunnel_probe_duration_seconds`: how long the last probe took.
    pub probe_duration_seconds: Gauge,
}

/// The handles of one SSH session's series (label `session`, `user@host:port`, with `#N`
/// appended when a session is not shared, or when another session has the same login).
#[derive(Clone, Debug)]
pub struct SessionMetrics {
    /// `forwarder_session_up`: 1 while it is established.
    pub up: IntGauge,
    /// `forwarder_session_reconnects_total`: sessions established after the first.
    pub reconnects: IntCounter,
    /// `forwarder_session_handshake_seconds`: TCP connect to authenticated.
    pub handshake_seconds: Histogram,
    /// `forwarder_session_keepalive_rtt_seconds`: keepalive request to reply.
    pub keepalive_rtt_seconds: Histogram,
    /// `forwarder_session_rekeys_total`: key re-exchanges completed.
    pub rekeys: IntCounter,
}

/// The handles of one bastion's handshake gate (label `bastion`, `host:port` of the first
/// host its sessions connect to): how a reconnect storm queues.
#[derive(Clone, Debug)]
pub struct BastionMetrics {
    /// `forwarder_bastion_handshakes_in_progress`: attempts under way, from their turn to
    /// their end.
    pub in_progress: IntGauge,
    /// `forwarder_bastion_handshakes_waiting`: attempts waiting for their turn, or for
    /// failed logins' penalties to lapse.
    pub waiting: IntGauge,
    /// `forwarder_bastion_handshake_wait_seconds`: how long each attempt waited.
    pub wait_seconds: Histogram,
    /// `forwarder_bastion_handshake_limit`: how many attempts may be under way at once.
    pub limit: IntGauge,
}

/// Why the admin endpoint closed a connection without serving it further.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminClose {
    /// Accepted from an address that already held its share of the connections.
    AddressLimit,
    /// Waiting for a request while every slot was taken: closed to serve a new client.
    Reclaimed,
}

impl AdminClose {
    const ALL: [Self; 2] = [Self::AddressLimit, Self::Reclaimed];

    fn label(self) -> &'static str {
        match self {
            Self::AddressLimit => "address_limit",
            Self::Reclaimed => "reclaimed",
        }
    }
}

/// The fleet's registry and metric families.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    tunnel_up: IntGaugeVec,
    tunnel_connections: IntCounterVec,
    tunnel_active: IntGaugeVec,
    tunnel_bytes: IntCounterVec,
    tunnel_probe_success: IntGaugeVec,
    tunnel_probe_duration: GaugeVec,
    session_up: IntGaugeVec,
    session_reconnects: IntCounterVec,
    session_handshake: HistogramVec,
    session_keepalive_rtt: HistogramVec,
    session_rekeys: IntCounterVec,
    bastion_in_progress: IntGaugeVec,
    bastion_waiting: IntGaugeVec,
    bastion_wait: HistogramVec,
    bastion_limit: IntGaugeVec,
    reload_ok: IntGauge,
    reload_timestamp: Gauge,
    tunnels: IntGaugeVec,
    admin_closed: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Registers `c` in `r`. The names are constants, distinct and valid, so this cannot fail.
fn register<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
    r.register(Box::new(c.clone()))
        .expect("metric names are valid and distinct");
    c
}

fn int_gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let v = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    register(r, v)
}

fn int_counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let v = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    register(r, v)
}

fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    let v = HistogramVec::new(opts, labels).expect("valid metric");
    register(r, v)
}

impl Metrics {
    /// A registry with every family; no tunnel or session yet.
    pub fn new() -> Self {
        let r = Registry::new();
        let tunnel = &["tunnel"];
        let session = &["session"];
        let tunnel_up = int_gauge_vec(
            &r,
            "forwarder_tunnel_up",
            "Whether the tunnel is up (1) or not (0), as its state in /tunnels says: its session \
             is up and it listens (a remote tunnel: the bastion granted its forward).",
            tunnel,
        );
        let tunnel_connections = int_counter_vec(
            &r,
            "forwarder_tunnel_connections_total",
            "Local connections the tunnel accepted.",
            tunnel,
        );
        let tunnel_active = int_gauge_vec(
            &r,
            "forwarder_tunnel_active_connections",
            "Local connections of the tunnel open now.",
            tunnel,
        );
        let tunnel_bytes = int_counter_vec(
            &r,
            "forwarder_tunnel_bytes_total",
            "Bytes the tunnel forwarded, from local clients to the remote (to_remote) or back (from_remote).",
            &["tunnel", "direction"],
        );
        let tunnel_probe_success = int_gauge_vec(
            &r,
            "forwarder_tunnel_probe_success",
            "Whether the last probe of the tunnel's remote succeeded (1) or not (0).",
            tunnel,
        );
        let tunnel_probe_duration = register(
            &r,
            GaugeVec::new(
                Opts::new(
                    "forwarder_tunnel_probe_duration_seconds",
                    "How long the last probe of the tunnel's remote took.",
                ),
                tunnel,
            )
            .expect("valid metric"),
        );
        let session_up = int_gauge_vec(
            &r,
            "forwarder_session_up",
            "Whether the SSH session is established (1) or not (0).",
            session,
        );
        let session_reconnects = int_counter_vec(
            &r,
            "forwarder_session_reconnects_total",
            "SSH sessions established again after the first one.",
            session,
        );
        let session_handshake = histogram_vec(
            &r,
            "forwarder_session_handshake_seconds",
            "Time from the TCP connect to the bastion to an authenticated SSH session.",
            session,
            HANDSHAKE_BUCKETS,
        );
        let session_keepalive_rtt = histogram_vec(
            &r,
            "forwarder_session_keepalive_rtt_seconds",
            "Round trip of the SSH keepalive requests.",
            session,
            KEEPALIVE_RTT_BUCKETS,
        );
        let session_rekeys = int_counter_vec(
            &r,
            "forwarder_session_rekeys_total",
            "SSH key re-exchanges completed.",
            session,
        );
        let bastion = &["bastion"];
        let bastion_in_progress = int_gauge_vec(
            &r,
            "forwarder_bastion_handshakes_in_progress",
            "SSH connection attempts to the bastion under way (at most \
             forwarder_bastion_handshake_limit).",
            bastion,
        );
        let bastion_waiting = int_gauge_vec(
            &r,
            "forwarder_bastion_handshakes_waiting",
            "SSH connection attempts to the bastion waiting for their turn, or for failed \
             logins to be far enough apart for sshd's PerSourcePenalties.",
            bastion,
        );
        let bastion_wait = histogram_vec(
            &r,
            "forwarder_bastion_handshake_wait_seconds",
            "How long each SSH connection attempt to the bastion waited before it began.",
            bastion,
            GATE_WAIT_BUCKETS,
        );
        let bastion_limit = int_gauge_vec(
            &r,
            "forwarder_bastion_handshake_limit",
            "How many SSH connection attempts to the bastion may be under way at once \
             ([admin] handshakes_per_bastion, or its entry in [admin.bastion_handshakes]).",
            bastion,
        );
        let reload_ok = register(
            &r,
            IntGauge::new(
                "forwarder_config_last_reload_successful",
                "Whether the last load of the tunnels file succeeded (1) or not (0).",
            )
            .expect("valid metric"),
        );
        let reload_timestamp = register(
            &r,
            Gauge::new(
                "forwarder_config_last_reload_success_timestamp_seconds",
                "When the tunnels file was last loaded successfully, in seconds since the Unix epoch.",
            )
            .expect("valid metric"),
        );
        let tunnels = int_gauge_vec(
            &r,
            "forwarder_tunnels",
            "Tunnels in each state.",
            &["state"],
        );
        for s in STATES {
            tunnels.with_label_values(&[s.as_str()]).set(0);
        }
        let admin_closed = int_counter_vec(
            &r,
            "forwarder_admin_connections_closed_total",
            "Connections to the admin endpoint it closed to stay available: \
             reason=\"address_limit\" when accepted from an address that already held its share, \
             reason=\"reclaimed\" when waiting for a request while every slot was taken.",
            &["reason"],
        );
        for reason in AdminClose::ALL {
            admin_closed.with_label_values(&[reason.label()]).inc_by(0);
        }
        Self {
            registry: r,
            tunnel_up,
            tunnel_connections,
            tunnel_active,
            tunnel_bytes,
            tunnel_probe_success,
            tunnel_probe_duration,
            session_up,
            session_reconnects,
            session_handshake,
            session_keepalive_rtt,
            session_rekeys,
            bastion_in_progress,
            bastion_waiting,
            bastion_wait,
            bastion_limit,
            reload_ok,
            reload_timestamp,
            tunnels,
            admin_closed,
        }
    }

    /// Counts a connection the admin endpoint closed, in
    /// `forwarder_admin_connections_closed_total{reason}`.
    pub fn admin_connection_closed(&self, why: AdminClose) {
        self.admin_closed.with_label_values(&[why.label()]).inc();
    }

    /// The series of tunnel `name` (created at 0 on first use; the same ones afterwards).
    pub fn tunnel(&self, name: &str) -> TunnelMetrics {
        let l = &[name];
        TunnelMetrics {
            up: self.tunnel_up.with_label_values(l),
            connections_total: self.tunnel_connections.with_label_values(l),
            active_connections: self.tunnel_active.with_label_values(l),
            bytes_to_remote: self.tunnel_bytes.with_label_values(&[name, TO_REMOTE]),
            bytes_from_remote: self.tunnel_bytes.with_label_values(&[name, FROM_REMOTE]),
            probe_success: self.tunnel_probe_success.with_label_values(l),
            probe_duration_seconds: self.tunnel_probe_duration.with_label_values(l),
        }
    }

    /// Removes every series of tunnel `name`. Handles still held keep counting, unseen.
    pub fn remove_tunnel(&self, name: &str) {
        let l = &[name];
        // An error only says the series did not exist.
        let _ = self.tunnel_up.remove_label_values(l);
        let _ = self.tunnel_connections.remove_label_values(l);
        let _ = self.tunnel_active.remove_label_values(l);
        let _ = self.tunnel_bytes.remove_label_values(&[name, TO_REMOTE]);
        let _ = self.tunnel_bytes.remove_label_values(&[name, FROM_REMOTE]);
        let _ = self.tunnel_probe_success.remove_label_values(l);
        let _ = self.tunnel_probe_duration.remove_label_values(l);
    }

    /// The series of session `label` (`user@host:port`, or `user@host:port#2` for a session
    /// that is not shared); created at 0 on first use.
    pub fn session(&self, label: &str) -> SessionMetrics {
        let l = &[label];
        SessionMetrics {
            up: self.session_up.with_label_values(l),
            reconnects: self.session_reconnects.with_label_values(l),
            handshake_seconds: self.session_handshake.with_label_values(l),
            keepalive_rtt_seconds: self.session_keepalive_rtt.with_label_values(l),
            rekeys: self.session_rekeys.with_label_values(l),
        }
    }

    /// Removes every series of session `label`.
    pub fn remove_session(&self, label: &str) {
        let l = &[label];
        let _ = self.session_up.remove_label_values(l);
        let _ = self.session_reconnects.remove_label_values(l);
        let _ = self.session_handshake.remove_label_values(l);
        let _ = self.session_keepalive_rtt.remove_label_values(l);
        let _ = self.session_rekeys.remove_label_values(l);
    }

    /// The series of bastion `label` (`host:port`); created at 0 on first use.
    pub fn bastion(&self, label: &str) -> BastionMetrics {
        let l = &[label];
        BastionMetrics {
            in_progress: self.bastion_in_progress.with_label_values(l),
            waiting: self.bastion_waiting.with_label_values(l),
            wait_seconds: self.bastion_wait.with_label_values(l),
            limit: self.bastion_limit.with_label_values(l),
        }
    }

    /// Removes every series of bastion `label`.
    pub fn remove_bastion(&self, label: &str) {
        let l = &[label];
        let _ = self.bastion_in_progress.remove_label_values(l);
        let _ = self.bastion_waiting.remove_label_values(l);
        let _ = self.bastion_wait.remove_label_values(l);
        let _ = self.bastion_limit.remove_label_values(l);
    }

    /// Records a load of the tunnels file: `forwarder_config_last_reload_successful`, and on
    /// success the time in `forwarder_config_last_reload_success_timestamp_seconds`.
    pub fn config_reloaded(&self, ok: bool) {
        self.reload_ok.set(i64::from(ok));
        if ok {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.reload_timestamp.set(now);
        }
    }

    /// Sets `forwarder_tunnels{state}` to the number of tunnels in each state (0 for a state
    /// no tunnel is in).
    pub fn set_tunnel_states(&self, states: impl IntoIterator<Item = TunnelState>) {
        let mut counts = [0i64; STATES.len()];
        for s in states {
            if let Some(i) = STATES.iter().position(|&x| x == s) {
                counts[i] += 1;
            }
        }
        for (s, n) in STATES.iter().zip(counts) {
            self.tunnels.with_label_values(&[s.as_str()]).set(n);
        }
    }

    /// Every series, in the Prometheus text format 0.0.4 ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let families = self.registry.gather();
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            // Only a write error of the sink or an inconsistent family; neither can happen with
            // these constant families and a Vec, but a scrape must not take the process down.
            warn!("encoding the metrics failed: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// The registry, to add collectors of other parts of the process.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample lines of `text` (no `#` lines), for exact matches.
    fn samples(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn encode_has_every_family_with_help_and_type() {
        let m = Metrics::new();
        let t = m.tunnel("acme-pg");
        t.up.set(1);
        t.connections_total.inc_by(3);
        t.active_connections.set(2);
        t.bytes_to_remote.inc_by(100);
        t.bytes_from_remote.inc_by(2000);
        t.probe_success.set(1);
        t.probe_duration_seconds.set(0.25);
        let s = m.session("deploy@bastion.example:22");
        s.up.set(1);
        s.reconnects.inc();
        s.handshake_seconds.observe(0.12);
        s.keepalive_rtt_seconds.observe(0.003);
        s.rekeys.inc();
        let b = m.bastion("bastion.example:22");
        b.in_progress.set(4);
        b.waiting.set(7);
        b.wait_seconds.observe(0.3);
        b.limit.set(4);
        m.config_reloaded(true);
        m.set_tunnel_states([TunnelState::Up, TunnelState::Up, TunnelState::Failed]);
        m.admin_connection_closed(AdminClose::AddressLimit);
        m.admin_connection_closed(AdminClose::AddressLimit);
        let text = m.encode();
        let lines = samples(&text);
        for want in [
            r#"forwarder_tunnel_up{tunnel="acme-pg"} 1"#,
            r#"forwarder_tunnel_connections_total{tunnel="acme-pg"} 3"#,
            r#"forwarder_tunnel_active_connections{tunnel="acme-pg"} 2"#,
            r#"forwarder_tunnel_bytes_total{direction="to_remote",tunnel="acme-pg"} 100"#,
            r#"forwarder_tunnel_bytes_total{direction="from_remote",tunnel="acme-pg"} 2000"#,
            r#"forwarder_tunnel_probe_success{tunnel="acme-pg"} 1"#,
            r#"forwarder_tunnel_probe_duration_seconds{tunnel="acme-pg"} 0.25"#,
            r#"forwarder_session_up{session="deploy@bastion.example:22"} 1"#,
            r#"forwarder_session_reconnects_total{session="deploy@bastion.example:22"} 1"#,
            r#"forwarder_session_rekeys_total{session="deploy@bastion.example:22"} 1"#,
            r#"forwarder_session_handshake_seconds_bucket{session="deploy@bastion.example:22",le="0.25"} 1"#,
            r#"forwarder_session_handshake_seconds_bucket{session="deploy@bastion.example:22",le="0.1"} 0"#,
            r#"forwarder_session_handshake_seconds_count{session="deploy@bastion.example:22"} 1"#,
            r#"forwarder_session_keepalive_rtt_seconds_bucket{session="deploy@bastion.example:22",le="0.005"} 1"#,
            r#"forwarder_session_keepalive_rtt_seconds_bucket{session="deploy@bastion.example:22",le="+Inf"} 1"#,
            r#"forwarder_bastion_handshakes_in_progress{bastion="bastion.example:22"} 4"#,
            r#"forwarder_bastion_handshakes_waiting{bastion="bastion.example:22"} 7"#,
            r#"forwarder_bastion_handshake_limit{bastion="bastion.example:22"} 4"#,
            r#"forwarder_bastion_handshake_wait_seconds_bucket{bastion="bastion.example:22",le="0.25"} 0"#,
            r#"forwarder_bastion_handshake_wait_seconds_bucket{bastion="bastion.example:22",le="0.5"} 1"#,
            r#"forwarder_bastion_handshake_wait_seconds_count{bastion="bastion.example:22"} 1"#,
            "forwarder_config_last_reload_successful 1",
            r#"forwarder_tunnels{state="up"} 2"#,
            r#"forwarder_tunnels{state="failed"} 1"#,
            r#"forwarder_tunnels{state="connecting"} 0"#,
            r#"forwarder_admin_connections_closed_total{reason="address_limit"} 2"#,
            r#"forwarder_admin_connections_closed_total{reason="reclaimed"} 0"#,
        ] {
            assert!(lines.contains(&want), "missing {want:?} in\n{text}");
        }
        for family in [
            "forwarder_tunnel_up gauge",
            "forwarder_tunnel_connections_total counter",
            "forwarder_tunnel_active_connections gauge",
            "forwarder_tunnel_bytes_total counter",
            "forwarder_tunnel_probe_success gauge",
            "forwarder_tunnel_probe_duration_seconds gauge",
            "forwarder_session_up gauge",
            "forwarder_session_reconnects_total counter",
            "forwarder_session_handshake_seconds histogram",
            "forwarder_session_keepalive_rtt_seconds histogram",
            "forwarder_session_rekeys_total counter",
            "forwarder_bastion_handshakes_in_progress gauge",
            "forwarder_bastion_handshakes_waiting gauge",
            "forwarder_bastion_handshake_wait_seconds histogram",
            "forwarder_bastion_handshake_limit gauge",
            "forwarder_config_last_reload_successful gauge",
            "forwarder_config_last_reload_success_timestamp_seconds gauge",
            "forwarder_tunnels gauge",
            "forwarder_admin_connections_closed_total counter",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family}\n")),
                "missing TYPE {family:?}"
            );
            let name = family.split(' ').next().unwrap();
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "missing HELP of {name}"
            );
        }
    }

    /// The alerting rules shipped in deploy/prometheus use only series forwarder exports.
    #[test]
    fn the_shipped_alerting_rules_name_only_exported_series() {
        let m = Metrics::new();
        m.tunnel("t");
        m.session("u@h:22");
        m.bastion("h:22");
        let text = m.encode();
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        let rules = include_str!("../../deploy/prometheus/alerts.yml");
        let mut named = 0;
        for line in rules
            .lines()
            .filter(|l| l.trim_start().starts_with("expr:"))
        {
            for word in line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("forwarder_") {
                    named += 1;
                    assert!(families.contains(&word), "{word} is not exported:\n{text}");
                }
            }
        }
        assert!(named >= 5, "the rules name {named} series");
    }

    #[test]
    fn a_new_tunnel_starts_at_zero_and_is_the_same_series_again() {
        let m = Metrics::new();
        let a = m.tunnel("a");
        let text = m.encode();
        let lines = samples(&text);
        assert!(lines.contains(&r#"forwarder_tunnel_up{tunnel="a"} 0"#));
        assert!(
            lines.contains(&r#"forwarder_tunnel_bytes_total{direction="to_remote",tunnel="a"} 0"#)
        );
        a.connections_total.inc();
        m.tunnel("a").connections_total.inc();
        assert_eq!(a.connections_total.get(), 2);
    }

    #[test]
    fn remove_tunnel_and_session_drop_their_series() {
        let m = Metrics::new();
        m.tunnel("gone").up.set(1);
        m.tunnel("kept").up.set(1);
        m.session("u@h:22").handshake_seconds.observe(1.0);
        m.session("u@h:22#2").up.set(1);
        m.bastion("gone:22").wait_seconds.observe(1.0);
        m.bastion("kept:22").limit.set(4);
        m.remove_tunnel("gone");
        m.remove_session("u@h:22");
        m.remove_bastion("gone:22");
        let text = m.encode();
        assert!(!text.contains(r#"tunnel="gone""#), "{text}");
        assert!(text.contains(r#"forwarder_tunnel_up{tunnel="kept"} 1"#));
        assert!(!text.contains(r#"session="u@h:22""#), "{text}");
        assert!(text.contains(r#"forwarder_session_up{session="u@h:22#2"} 1"#));
        assert!(!text.contains(r#"bastion="gone:22""#), "{text}");
        assert!(text.contains(r#"forwarder_bastion_handshake_limit{bastion="kept:22"} 4"#));
        // Removing again, or something never created, is harmless.
        m.remove_tunnel("gone");
        m.remove_session("never");
        // With nothing left the families vanish, HELP lines included.
        m.remove_tunnel("kept");
        m.remove_session("u@h:22#2");
        let text = m.encode();
        assert!(!text.contains("forwarder_tunnel_up"), "{text}");
        assert!(!text.contains("forwarder_session_"), "{text}");
        assert!(text.contains("forwarder_config_last_reload_successful 0"));
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        m.tunnel("a \"quoted\" back\\slash\nnewline").up.set(1);
        let text = m.encode();
        assert!(
            samples(&text)
                .contains(&r#"forwarder_tunnel_up{tunnel="a \"quoted\" back\\slash\nnewline"} 1"#),
            "{text}"
        );
        // Every sample stays on one line.
        assert!(
            text.lines()
                .filter(|l| l.contains("quoted"))
                .all(|l| l.starts_with("forwarder_")),
            "{text}"
        );
    }

    #[test]
    fn config_reloads() {
        let m = Metrics::new();
        m.config_reloaded(true);
        let stamp = m.reload_timestamp.get();
        assert!(stamp > 1_600_000_000.0);
        assert_eq!(m.reload_ok.get(), 1);
        m.config_reloaded(false);
        assert_eq!(m.reload_ok.get(), 0);
        assert_eq!(
            m.reload_timestamp.get(),
            stamp,
            "only a success moves the time"
        );
        assert!(
            m.encode()
                .contains("forwarder_config_last_reload_successful 0\n")
        );
    }
}
