//! Loopback ports: picking free ones and waiting for listeners.

use std::collections::HashSet;
use std::collections::hash_map::RandomState;
use std::fs;
use std::hash::BuildHasher;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

/// The loopback address every lab server listens on.
pub const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// A port on 127.0.0.1 that nothing listens on right now.
///
/// Servers started by another program (sshd, PostgreSQL, an ssh client's `-L` listener) need a
/// port number before they bind, so there is always a window in which someone else may take
/// it; the lab's servers retry with a new port when that happens. To make it rare, ports are
/// drawn at random from below the kernel's ephemeral range, where the kernel never hands out
/// ports for outgoing connections or `bind(0)`, and never twice from one process.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);

    let (low, high) = candidate_range();
    let span = u64::from(high - low);
    let random = RandomState::new();
    for attempt in 0..200u64 {
        let offset = random.hash_one((std::process::id(), attempt)) % span;
        let port = low + u16::try_from(offset).unwrap_or(0);
        if !handed_out.contains(&port) && can_bind(port) {
            handed_out.insert(port);
            return port;
        }
    }
    // The range is crowded: let the kernel choose.
    for _ in 0..100 {
        let port = TcpListener::bind((LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind 127.0.0.1:0");
        if handed_out.insert(port) {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1")
}

/// Ports between 20000 and the start of the ephemeral range (from
/// `/proc/sys/net/ipv4/ip_local_port_range`, Linux default 32768).
fn candidate_range() -> (u16, u16) {
    let ephemeral_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if ephemeral_low > 21000 {
        (20000, ephemeral_low)
    } else {
        (ephemeral_low.max(1024), u16::MAX)
    }
}

fn can_bind(port: u16) -> bool {
    TcpListener::bind((LOCALHOST, port)).is_ok()
}

/// Whether something listens on 127.0.0.1:`port` (or on all IPv4 addresses), judged from
/// `/proc/net/tcp` so that asking does not open a connection: a probe connection through a
/// tunnel would reach the server behind it. Falls back to connecting when `/proc` is missing.
pub fn port_listening(port: u16) -> bool {
    match fs::read_to_string("/proc/net/tcp") {
        Ok(table) => listening_in_proc_table(&table, port),
        Err(_) => TcpStream::connect_timeout(
            &SocketAddr::from((LOCALHOST, port)),
            Duration::from_millis(200),
        )
        .is_ok(),
    }
}

/// Scans a `/proc/net/tcp` table for a LISTEN socket on 127.0.0.1 or 0.0.0.0 at `port`.
fn listening_in_proc_table(table: &str, port: u16) -> bool {
    const LISTEN: &str = "0A";
    let wanted = [
        format!("0100007F:{port:04X}"),
        format!("00000000:{port:04X}"),
    ];
    table.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace();
        let local = fields.nth(1);
        let state = fields.nth(1);
        state == Some(LISTEN) && local.is_some_and(|l| wanted.iter().any(|w| w == l))
    })
}

/// Connects to 127.0.0.1:`port` with a short timeout.
pub fn connect(port: u16) -> std::io::Result<TcpStream> {
    TcpStream::connect_timeout(&SocketAddr::from((LOCALHOST, port)), Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_and_bindable() {
        let ports: Vec<u16> = (0..20).map(|_| free_port()).collect();
        let unique: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(unique.len(), ports.len());
        for port in ports {
            TcpListener::bind((LOCALHOST, port)).expect("port is free");
        }
    }

    #[test]
    fn listening_is_seen_and_closing_is_seen() {
        let listener = TcpListener::bind((LOCALHOST, 0)).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        assert!(port_listening(port));
        drop(listener);
        assert!(!port_listening(port));
    }

    #[test]
    fn proc_table_parsing_matches_only_listen_state() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue\n\
             0: 0100007F:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000\n\
             1: 0100007F:1539 0100007F:D431 01 00000000:00000000 00:00000000 00000000\n\
             2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000\n";
        assert!(listening_in_proc_table(table, 0x1538));
        assert!(!listening_in_proc_table(table, 0x1539));
        assert!(listening_in_proc_table(table, 22));
        assert!(!listening_in_proc_table(table, 23));
    }
}
