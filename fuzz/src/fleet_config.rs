//! The fleet file of `forwarder serve`: `forwarder::fleet::config::parse` on arbitrary text
//! (TOML through serde, then every tunnel resolved through the command line's parser).
//!
//! Input: the file's bytes; text that is not UTF-8 is refused before the parser, as `load`
//! does. Key files are taken as readable, so the fuzzer reaches everything after that check.

use std::path::{Path, PathBuf};

use forwarder::cli::Environment;
use forwarder::fleet::config::{TunnelKind, parse};

/// Fuzz entry point.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = Environment {
        home: Some(PathBuf::from("/home/fuzz")),
        user: Some("fuzz".into()),
        cache_home: None,
    };
    let readable = |_: &Path| Ok(());
    let first = parse("fuzz.toml", text, &env, &readable);
    match &first {
        Ok(cfg) => {
            for (i, t) in cfg.tunnels.iter().enumerate() {
                assert!(!t.name.is_empty(), "a tunnel without a name");
                assert!(t.line >= 1, "a tunnel on line 0");
                assert!(t.remote.port() != Some(0), "remote port 0 accepted");
                // A local tunnel is one -L forward; a remote one is its -R spec alone.
                let locals = match &t.kind {
                    TunnelKind::Local => {
                        let to = t.config.forwards.first().map(|f| &f.to);
                        assert_eq!(to, Some(&t.remote), "a local tunnel's remote");
                        1
                    }
                    TunnelKind::Remote(spec) => {
                        assert_eq!(spec.target, t.remote, "a remote tunnel's target");
                        0
                    }
                };
                assert_eq!(t.config.forwards.len(), locals, "a tunnel is one forward");
                assert!(t.same_as(t), "a tunnel differs from itself");
                for other in cfg.tunnels.iter().skip(i + 1) {
                    assert_ne!(t.name, other.name, "a duplicate name accepted");
                }
            }
            assert!(!cfg.admin.drain_timeout.is_zero() && !cfg.admin.probe_interval.is_zero());
            assert!(
                (1..=forwarder::supervisor::MAX_HANDSHAKES_PER_BASTION)
                    .contains(&cfg.admin.handshakes_per_bastion),
                "a handshake limit out of range accepted"
            );
            for (i, b) in cfg.admin.bastion_handshakes.iter().enumerate() {
                assert!(
                    (1..=forwarder::supervisor::MAX_HANDSHAKES_PER_BASTION).contains(&b.limit),
                    "a bastion's handshake limit out of range accepted"
                );
                assert!(!b.host.is_empty(), "a bastion limit without a host");
                assert_ne!(b.port, Some(0), "a bastion limit on port 0");
                // An entry that names its port is that bastion's limit.
                if let Some(port) = b.port {
                    assert_eq!(
                        cfg.admin.handshakes_for(&b.host, port),
                        b.limit,
                        "an entry with a port is not its bastion's limit"
                    );
                }
                for other in cfg.admin.bastion_handshakes.iter().skip(i + 1) {
                    assert_ne!(
                        (&b.host, b.port),
                        (&other.host, other.port),
                        "two limits for one bastion"
                    );
                }
            }
            // The warnings about unused limits never fail.
            let _ = forwarder::fleet::config::unused_bastion_limits(cfg);
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(
                shown.starts_with("fuzz.toml"),
                "an error that does not name the file: {shown}"
            );
            if let Some(line) = e.line {
                assert!(
                    line >= 1 && line <= text.lines().count().max(1) + 1,
                    "line {line} is outside the file"
                );
            }
        }
    }
    // Parsing is a pure function of the text and the environment.
    let again = parse("fuzz.toml", text, &env, &readable);
    assert_eq!(
        first.is_ok(),
        again.is_ok(),
        "the same file parsed differently"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_runs() {
        for s in crate::seeds::all()
            .iter()
            .filter(|s| s.target == "fleet_config")
        {
            run(&s.data);
        }
    }

    #[test]
    fn the_seeds_load() {
        let env = Environment {
            home: Some(PathBuf::from("/home/fuzz")),
            user: Some("fuzz".into()),
            cache_home: None,
        };
        let ok = crate::seeds::all()
            .iter()
            .filter(|s| s.target == "fleet_config")
            .filter(|s| {
                parse(
                    "f",
                    std::str::from_utf8(&s.data).unwrap_or(""),
                    &env,
                    &|_: &Path| Ok(()),
                )
                .is_ok()
            })
            .count();
        assert!(ok >= 2, "the seeds should mostly be valid files");
    }
}
