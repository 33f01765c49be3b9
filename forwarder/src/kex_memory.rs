//! Each bastion's own first choices of key exchange and host key algorithm, remembered from
//! its last KEXINIT for the life of the process, so that the next session to it (a
//! reconnect, another session of a fleet, the next hop of a chain brought up again) can send
//! its first key exchange message as a guess and save a round trip (RFC 4253 section 7.1;
//! [`ClientConfig::guess_first_kex`]).
//!
//! ```text
//!  start_hop ──> prepare: server's first kex (if we allow it) first; its first host key
//!                algorithm first if known_hosts holds that key type (or nothing yet);
//!                guess only when both our firsts are now the server's
//!  authenticated ──> remember(host key name, port, server's firsts)
//! ```
//!
//! Only a server that authenticated us is remembered, so a host that fails host key
//! verification cannot change our order. The server's first choice wins only among the
//! algorithms our configuration allows anyway: the order changes, the set never does.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use ssh_transport::ClientConfig;
use ssh_transport::kex::KexAlgorithm;

/// Bastions remembered at most; past it the memory starts again (a fleet's bastions are far
/// fewer, and forgetting costs one round trip per session).
const CAPACITY: usize = 4096;

/// A bastion's first choices: key exchange name, host key algorithm name.
type Firsts = (String, String);

static MEMORY: LazyLock<Mutex<HashMap<(String, u16), Firsts>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Remembers what `host`/`port` (its known_hosts name) chose first.
pub fn remember(host: &str, port: u16, firsts: Option<&Firsts>) {
    let Some(firsts) = firsts else { return };
    let mut memory = MEMORY.lock().unwrap_or_else(|p| p.into_inner());
    if memory.len() >= CAPACITY && !memory.contains_key(&(host.to_owned(), port)) {
        memory.clear();
    }
    memory.insert((host.to_owned(), port), firsts.clone());
}

/// `cfg` for a session to `host`/`port`, reordered to guess its first key exchange message
/// when this process has seen the server before. `known_types` are the host key types
/// known_hosts holds for it.
pub fn prepare(cfg: ClientConfig, host: &str, port: u16, known_types: &[String]) -> ClientConfig {
    let firsts = MEMORY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&(host.to_owned(), port))
        .cloned();
    match firsts {
        Some(firsts) => prepare_with(cfg, &firsts, known_types),
        None => cfg,
    }
}

fn prepare_with(mut cfg: ClientConfig, firsts: &Firsts, known_types: &[String]) -> ClientConfig {
    let (kex, host_key) = firsts;
    if let Some(i) = cfg.kex_algorithms.iter().position(|k| k.name() == kex) {
        let k = cfg.kex_algorithms.remove(i);
        cfg.kex_algorithms.insert(0, k);
    }
    if let Some(i) = cfg
        .host_key_algorithms
        .iter()
        .position(|a| a.name() == host_key)
    {
        // Asking for a key type known_hosts does not hold for this host would fail the
        // verification when it holds another one.
        let usable = known_types.is_empty()
            || known_types
                .iter()
                .any(|t| t == cfg.host_key_algorithms[i].key_type().name());
        if usable {
            let a = cfg.host_key_algorithms.remove(i);
            cfg.host_key_algorithms.insert(0, a);
        }
    }
    cfg.guess_first_kex = cfg.kex_algorithms.first().map(|k| k.name()) == Some(kex.as_str())
        && cfg.host_key_algorithms.first().map(|a| a.name()) == Some(host_key.as_str())
        && cfg
            .kex_algorithms
            .first()
            .is_some_and(|k: &KexAlgorithm| k.is_single_pass());
    cfg
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssh_transport::hostkey::SignatureAlgorithm;

    fn firsts(kex: &str, host_key: &str) -> Firsts {
        (kex.to_owned(), host_key.to_owned())
    }

    fn names(cfg: &ClientConfig) -> (&'static str, &'static str) {
        (
            cfg.kex_algorithms[0].name(),
            cfg.host_key_algorithms[0].name(),
        )
    }

    #[test]
    fn an_openssh_9_2_bastion_is_guessed_with_its_own_firsts() {
        let before = ClientConfig::default();
        let kexes = before.kex_algorithms.len();
        let cfg = prepare_with(
            before,
            &firsts("sntrup761x25519-sha512@openssh.com", "rsa-sha2-512"),
            &["ssh-rsa".to_owned(), "ssh-ed25519".to_owned()],
        );
        assert_eq!(
            names(&cfg),
            ("sntrup761x25519-sha512@openssh.com", "rsa-sha2-512")
        );
        assert!(cfg.guess_first_kex);
        assert_eq!(cfg.kex_algorithms.len(), kexes, "the set stays the same");
    }

    #[test]
    fn no_guess_for_a_host_key_type_known_hosts_lacks_or_an_algorithm_we_do_not_allow() {
        let cfg = prepare_with(
            ClientConfig::default(),
            &firsts("curve25519-sha256", "rsa-sha2-512"),
            &["ssh-ed25519".to_owned()],
        );
        assert_eq!(names(&cfg), ("curve25519-sha256", "ssh-ed25519"));
        assert!(!cfg.guess_first_kex);

        let only_nist = ClientConfig {
            kex_algorithms: vec![KexAlgorithm::EcdhNistP256],
            ..ClientConfig::default()
        };
        let cfg = prepare_with(only_nist, &firsts("curve25519-sha256", "ssh-ed25519"), &[]);
        assert_eq!(cfg.kex_algorithms, vec![KexAlgorithm::EcdhNistP256]);
        assert!(!cfg.guess_first_kex);
    }

    #[test]
    fn group_exchange_first_is_not_guessed() {
        let cfg = prepare_with(
            ClientConfig::default(),
            &firsts("diffie-hellman-group-exchange-sha256", "ssh-ed25519"),
            &[],
        );
        assert_eq!(cfg.kex_algorithms[0], KexAlgorithm::DhGexSha256);
        assert!(!cfg.guess_first_kex);
        assert_eq!(cfg.host_key_algorithms[0], SignatureAlgorithm::Ed25519);
    }

    #[test]
    fn remembered_per_host_and_port() {
        remember(
            "memory-test.example",
            2222,
            Some(&firsts("curve25519-sha256", "ssh-ed25519")),
        );
        let cfg = prepare(ClientConfig::default(), "memory-test.example", 2222, &[]);
        assert!(cfg.guess_first_kex);
        assert_eq!(names(&cfg), ("curve25519-sha256", "ssh-ed25519"));
        let other = prepare(ClientConfig::default(), "memory-test.example", 22, &[]);
        assert!(!other.guess_first_kex);
    }
}
