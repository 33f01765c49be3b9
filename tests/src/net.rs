//! Loopback ports: picking free ones and waiting for listeners.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::fs;
use std::hash::BuildHasher;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
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
/// ports for outgoing connections or `bind(0)`, and each is reserved for the life of the
/// process: within it, and against every other lab process (nextest runs each test in its
/// own), by a lock on a file named after the port. Without that, two
/// tests running at once could each be handed the same port, and one of them would talk to
/// the other's server.
pub fn free_port() -> u16 {
    static RESERVED: Mutex<Option<Reservations>> = Mutex::new(None);
    let mut reserved = RESERVED.lock().unwrap_or_else(|p| p.into_inner());
    let reserved = reserved.get_or_insert_with(Reservations::open);

    let (low, high) = candidate_range();
    let span = u64::from(high - low);
    let random = RandomState::new();
    for attempt in 0..400u64 {
        let offset = random.hash_one((std::process::id(), attempt)) % span;
        let port = low + u16::try_from(offset).unwrap_or(0);
        if !reserved.holds(port) && can_bind(port) && reserved.reserve(port) {
            return port;
        }
    }
    // The range is crowded: let the kernel choose.
    for _ in 0..100 {
        let port = TcpListener::bind((LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind 127.0.0.1:0");
        if !reserved.holds(port) && reserved.reserve(port) {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1")
}

/// The ports this process was handed, each held by an exclusive lock on its own file in a
/// directory every lab process shares. The locks go when the process ends, however it ends,
/// so a crashed test never leaks a port. Where the directory cannot be used, ports are only
/// kept apart within the process.
#[derive(Debug)]
struct Reservations {
    dir: Option<PathBuf>,
    held: HashMap<u16, Option<fs::File>>,
}

impl Reservations {
    fn open() -> Reservations {
        let dir = std::env::temp_dir().join("ssh-lab-ports");
        let usable = fs::create_dir_all(&dir).is_ok();
        if usable {
            // Shared by whoever runs lab processes on this machine, like /tmp itself.
            use std::os::unix::fs::PermissionsExt;
            let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777));
        }
        Reservations {
            dir: usable.then_some(dir),
            held: HashMap::new(),
        }
    }

    fn holds(&self, port: u16) -> bool {
        self.held.contains_key(&port)
    }

    /// Reserves `port`, unless another live process holds it.
    fn reserve(&mut self, port: u16) -> bool {
        let Some(dir) = &self.dir else {
            self.held.insert(port, None);
            return true;
        };
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(port.to_string()));
        match file {
            Ok(file) => match file.try_lock() {
                Ok(()) => {
                    self.held.insert(port, Some(file));
                    true
                }
                Err(_) => false,
            },
            // A file another user made and we may not open: treat the port as taken.
            Err(_) => false,
        }
    }
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
        Ok(table) => !listening_inodes(&table, port).is_empty(),
        Err(_) => TcpStream::connect_timeout(
            &SocketAddr::from((LOCALHOST, port)),
            Duration::from_millis(200),
        )
        .is_ok(),
    }
}

/// Whether one of `pids` holds a socket listening on 127.0.0.1:`port` (or on all IPv4
/// addresses). A listener of any other process does not count, so a client that failed to
/// bind its port is not taken for ready because someone else listens there. Without `/proc`
/// this is [`port_listening`].
pub fn port_listening_by(pids: &[u32], port: u16) -> bool {
    let Ok(table) = fs::read_to_string("/proc/net/tcp") else {
        return port_listening(port);
    };
    let inodes = listening_inodes(&table, port);
    if inodes.is_empty() {
        return false;
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    pids.iter().any(|pid| {
        fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
            fds.filter_map(Result::ok).any(|fd| {
                fs::read_link(fd.path())
                    .is_ok_and(|target| wanted.iter().any(|w| target.as_os_str() == w.as_str()))
            })
        })
    })
}

/// The inodes of the LISTEN sockets on 127.0.0.1 or 0.0.0.0 at `port` in a `/proc/net/tcp`
/// table (an inode of 0, which a socket shows while it is being set up, is left out only
/// when the table lacks the column).
fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    const LISTEN: &str = "0A";
    let wanted = [
        format!("0100007F:{port:04X}"),
        format!("00000000:{port:04X}"),
    ];
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields.get(1)?;
            let state = fields.get(3)?;
            (*state == LISTEN && wanted.iter().any(|w| w == local))
                .then(|| fields.get(9).and_then(|i| i.parse().ok()).unwrap_or(0))
        })
        .collect()
}

/// Connects to 127.0.0.1:`port` with a short timeout.
pub fn connect(port: u16) -> std::io::Result<TcpStream> {
    TcpStream::connect_timeout(&SocketAddr::from((LOCALHOST, port)), Duration::from_secs(5))
}

/// Whether `path` names a Unix socket (not following a symbolic link).
pub fn is_socket(path: &std::path::Path) -> bool {
    use std::os::unix::fs::FileTypeExt as _;
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

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
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: 0100007F:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4101 1 0\n\
             1: 0100007F:1539 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4102 1 0\n\
             2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4103 1 0\n";
        assert_eq!(listening_inodes(table, 0x1538), [4101]);
        assert!(listening_inodes(table, 0x1539).is_empty());
        assert_eq!(listening_inodes(table, 22), [4103]);
        assert!(listening_inodes(table, 23).is_empty());
    }

    #[test]
    fn a_listener_counts_only_for_the_process_that_holds_it() {
        let listener = TcpListener::bind((LOCALHOST, 0)).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        assert!(port_listening_by(&[std::process::id()], port));
        // Process 1 (init) does not hold it, though the port listens.
        assert!(port_listening(port));
        assert!(!port_listening_by(&[1], port));
        drop(listener);
        assert!(!port_listening_by(&[std::process::id()], port));
    }

    #[test]
    fn another_process_is_not_handed_a_port_this_one_holds() {
        let port = free_port();
        let mut other = Reservations::open();
        if other.dir.is_none() {
            // No shared directory here: only the in-process rule applies, tested above.
            assert!(other.reserve(port));
            return;
        }
        // A second set of reservations locks the same files as another process would
        // (a lock taken through another open file description conflicts on Linux).
        assert!(!other.reserve(port), "port {port} was reserved twice");
        let fresh = (port..u16::MAX)
            .find(|&p| !other.holds(p) && p != port && other.reserve(p))
            .expect("another port");
        assert_ne!(fresh, port);
    }
}
