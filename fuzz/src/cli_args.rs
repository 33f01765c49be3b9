//! The command line: `forwarder::cli::parse_args_with_env`, then the transport settings it
//! resolves (`forwarder::config::TunnelConfig::from_options`: algorithm list syntax, RekeyLimit,
//! keepalive and reconnect settings).
//!
//! Input: the arguments, separated by NUL bytes (which cannot occur inside a real argument),
//! passed as raw `OsString`s so that non-UTF-8 arguments are covered too. The environment is
//! fixed, so a crash reproduces on any machine (`parse_args` differs only in reading it from
//! the process).

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt as _;
use std::path::PathBuf;

use forwarder::cli::{Command, Environment, parse_args_with_env};

/// Arguments per input; a real command line has a handful.
const MAX_ARGS: usize = 256;

/// Fuzz entry point.
pub fn run(data: &[u8]) {
    let args: Vec<OsString> = data
        .split(|&b| b == 0)
        .take(MAX_ARGS)
        .map(|a| std::ffi::OsStr::from_bytes(a).to_owned())
        .collect();
    let env = Environment {
        home: Some(PathBuf::from("/home/fuzz")),
        user: Some("fuzz".into()),
        cache_home: None,
    };
    let Ok(Command::Run(options)) = parse_args_with_env(args.clone(), &env) else {
        return;
    };
    assert!(options.port != 0, "port 0 accepted");
    assert!(!options.user.is_empty(), "empty user accepted");
    assert!(!options.destination_host.is_empty(), "empty host accepted");
    let forwards = options
        .local_forwards
        .iter()
        .map(|f| (f.flag(), f))
        .chain(options.remote_forwards.iter().map(|f| ("-R", f)));
    for (flag, f) in forwards {
        let _ = f.listen.bind_target(options.gateway_ports);
        // A forward shows as a spec that parses back to it (socket paths included), unless
        // its socket paths hold what a parse expands again (`%`, `$`, a leading `~`).
        let shown = f.to_string();
        if shown.contains(['%', '$', '~']) {
            continue;
        }
        let again = parse_args_with_env(vec![flag.into(), shown.clone(), "h".into()], &env);
        match again {
            Ok(Command::Run(o)) => {
                let parsed = if flag == "-R" {
                    o.remote_forwards
                } else {
                    o.local_forwards
                };
                assert_eq!(parsed, std::slice::from_ref(f), "{flag} {shown}");
            }
            other => panic!("{flag} {shown} does not parse back: {other:?}"),
        }
    }
    // PermitRemoteOpen shows as words that parse back to it, and allows nothing under
    // `none`.
    let permit = &options.permit_remote_open;
    let shown = permit.to_string();
    assert_eq!(
        forwarder::remote::PermitRemoteOpen::parse(&shown.split(' ').collect::<Vec<_>>()).as_ref(),
        Ok(permit),
        "PermitRemoteOpen {shown}"
    );
    if *permit == forwarder::remote::PermitRemoteOpen::None {
        assert!(!permit.allows("127.0.0.1", 22), "none allowed a target");
    }
    // -G prints every resolved setting, the destination first.
    if let Ok(text) = forwarder::cli::show::config_text(&options) {
        assert!(text.starts_with("host "), "{text}");
        assert!(
            text.contains(&format!("\nport {}\n", options.port)),
            "{text}"
        );
    }
    // KnownHostsCommand runs an absolute program, with one argument per word, none of
    // which can hold a NUL (where a runtime token was cut out).
    if let Some(command) = &options.known_hosts_command {
        use forwarder::known_hosts::command::Invocation;
        assert!(command.program.is_absolute(), "{command:?}");
        for invocation in [Invocation::Order, Invocation::Hostname] {
            let argv = command.argv("[h]:2", invocation, None);
            assert_eq!(argv.len(), command.args.len());
            assert!(argv.iter().all(|a| !a.contains('\0')), "{argv:?}");
        }
    }
    // The algorithm lists (OpenSSH's + - ^ and wildcard syntax) and RekeyLimit are resolved
    // after parsing: an error is fine, an empty list is not.
    if let Ok(tunnel) = forwarder::config::TunnelConfig::from_options(&options) {
        let cfg = forwarder::config::prefer_known_host_key_types(
            tunnel.session.transport,
            &["ssh-rsa".to_owned()],
            true,
            false,
        );
        assert!(
            !tunnel.session_wait_timeout.is_zero(),
            "no wait for a session"
        );
        assert!(!tunnel.session.reconnect.max.is_zero(), "no backoff cap");
        assert!(!cfg.ciphers.is_empty(), "no cipher");
        assert!(!cfg.kex_algorithms.is_empty(), "no key exchange");
        assert!(!cfg.host_key_algorithms.is_empty(), "no host key algorithm");
        assert!(!cfg.macs.is_empty(), "no MAC");
        assert!(!cfg.compression.is_empty(), "no compression method");
    }
    // Parsing is a pure function of the arguments and the environment.
    assert_eq!(
        parse_args_with_env(args, &env),
        Ok(Command::Run(options)),
        "the same arguments parsed differently"
    );
}
