//! `-G`: the settings a run would use, after the command line, ssh_config's Host and Match
//! blocks and the defaults, one `keyword value` line each in `ssh -G`'s form (lowercase
//! keywords; `yes`/`no`, or `true`/`false` where ssh prints those), so that the two can be
//! compared line by line. Paths are shown expanded; algorithm lists resolved.

use std::fmt::Write as _;

use super::{
    AddressFamily, Destination, ForwardSpec, IdentityAgent, Listen, LogLevel, Options,
    StrictHostKeyChecking,
};
use crate::known_hosts::command::Piece;

/// The lines `forwarder -G` prints, or why the options cannot be resolved (an algorithm list
/// that names nothing forwarder has).
pub fn config_text(opts: &Options) -> Result<String, String> {
    let transport = crate::config::transport_config(opts).map_err(|e| e.0)?;
    let mut out = String::new();
    let mut line = |key: &str, value: &dyn std::fmt::Display| {
        let _ = writeln!(out, "{key} {value}");
    };
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let true_false = |b: bool| if b { "true" } else { "false" };
    let paths = |p: &[std::path::PathBuf]| {
        if p.is_empty() {
            "none".to_owned()
        } else {
            p.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        }
    };
    let names = |n: &mut dyn Iterator<Item = &str>| n.collect::<Vec<_>>().join(",");
    let seconds = |d: Option<std::time::Duration>| d.map_or(0, |d| d.as_secs());

    line("host", &opts.original_host);
    line("user", &opts.user);
    line("hostname", &opts.destination_host);
    line("port", &opts.port);
    line(
        "addressfamily",
        &match opts.address_family {
            AddressFamily::Any => "any",
            AddressFamily::Inet => "inet",
            AddressFamily::Inet6 => "inet6",
        },
    );
    line("batchmode", &yes_no(opts.batch_mode));
    line("compression", &yes_no(opts.compression));
    line(
        "exitonforwardfailure",
        &yes_no(opts.exit_on_forward_failure),
    );
    line("gatewayports", &yes_no(opts.gateway_ports));
    line("hashknownhosts", &yes_no(opts.hash_known_hosts));
    line("identitiesonly", &yes_no(opts.identities_only));
    line(
        "kbdinteractiveauthentication",
        &yes_no(opts.kbd_interactive_authentication),
    );
    line(
        "passwordauthentication",
        &yes_no(opts.password_authentication),
    );
    line(
        "pubkeyauthentication",
        &true_false(opts.pubkey_authentication),
    );
    line(
        "forkafterauthentication",
        &yes_no(opts.fork_after_authentication),
    );
    line(
        "controlmaster",
        &match opts.control_master {
            super::ControlMaster::No => "false",
            super::ControlMaster::Yes => "true",
            super::ControlMaster::Auto => "auto",
        },
    );
    line(
        "streamlocalbindunlink",
        &yes_no(opts.stream_local_bind_unlink),
    );
    line(
        "stricthostkeychecking",
        &match opts.strict_host_key_checking {
            StrictHostKeyChecking::Yes => "true",
            StrictHostKeyChecking::AcceptNew => "accept-new",
            StrictHostKeyChecking::No => "false",
        },
    );
    line("tcpkeepalive", &yes_no(opts.tcp_keep_alive));
    line("updatehostkeys", &true_false(opts.update_host_keys));
    line("connectionattempts", &opts.connection_attempts);
    line("numberofpasswordprompts", &opts.number_of_password_prompts);
    line("serveralivecountmax", &opts.server_alive_count_max);
    line("serveraliveinterval", &seconds(opts.server_alive_interval));
    line(
        "ciphers",
        &names(&mut transport.ciphers.iter().map(|c| c.name)),
    );
    line(
        "hostkeyalgorithms",
        &names(&mut transport.host_key_algorithms.iter().map(|a| a.name())),
    );
    line(
        "kexalgorithms",
        &names(&mut transport.kex_algorithms.iter().map(|k| k.name())),
    );
    line("loglevel", &log_level(opts.log_level));
    line("macs", &names(&mut transport.macs.iter().map(|m| m.name)));
    if let Some(list) = &opts.pubkey_accepted_algorithms {
        line("pubkeyacceptedalgorithms", list);
    }
    if let Some(address) = &opts.bind_address {
        line("bindaddress", address);
    }
    if let Some(interface) = &opts.bind_interface {
        line("bindinterface", interface);
    }
    if let Some(path) = &opts.control_path {
        line("controlpath", &path.display());
    }
    line(
        "controlpersist",
        &match opts.control_persist {
            super::ControlPersist::No => "no".to_owned(),
            super::ControlPersist::Forever => "yes".to_owned(),
            super::ControlPersist::Idle(d) => d.as_secs().to_string(),
        },
    );
    if let Some(alias) = &opts.host_key_alias {
        line("hostkeyalias", alias);
    }
    match &opts.identity_agent {
        IdentityAgent::AuthSock => {}
        IdentityAgent::None => line("identityagent", &"none"),
        IdentityAgent::Env(name) => line("identityagent", &format!("${name}")),
        IdentityAgent::Path(path) => line("identityagent", &path.display()),
    }
    if let Some(methods) = &opts.preferred_authentications {
        line("preferredauthentications", &methods.join(","));
    }
    if !opts.revoked_host_keys.is_empty() {
        line("revokedhostkeys", &paths(&opts.revoked_host_keys));
    }
    if let Some(command) = &opts.known_hosts_command {
        line("knownhostscommand", &command_text(command));
    }
    for f in &opts.local_forwards {
        let key = if f.to == Destination::Socks {
            "dynamicforward"
        } else {
            "localforward"
        };
        line(key, &forward_text(f));
    }
    for f in &opts.remote_forwards {
        line("remoteforward", &forward_text(f));
    }
    for f in &opts.identity_files {
        line("identityfile", &f.display());
    }
    for f in &opts.certificate_files {
        line("certificatefile", &f.display());
    }
    line(
        "globalknownhostsfile",
        &paths(&opts.global_known_hosts_files),
    );
    line("userknownhostsfile", &paths(&opts.user_known_hosts_files));
    line("permitremoteopen", &opts.permit_remote_open);
    match opts.connect_timeout {
        Some(t) => line("connecttimeout", &t.as_secs()),
        None => line("connecttimeout", &"none"),
    }
    if let Some(limit) = &opts.rekey_limit {
        line(
            "rekeylimit",
            &format!("{} {}", limit.bytes.unwrap_or(0), seconds(limit.interval)),
        );
    } else {
        line("rekeylimit", &"0 0");
    }
    line(
        "streamlocalbindmask",
        &format!("0{:o}", opts.stream_local_bind_mask),
    );
    if !opts.proxy_jump.is_empty() {
        let hops: Vec<String> = opts.proxy_jump.iter().map(ToString::to_string).collect();
        line("proxyjump", &hops.join(","));
    }
    // forwarder's own.
    line("reconnect", &yes_no(opts.reconnect));
    line("reconnectbackoffmax", &opts.reconnect_backoff_max.as_secs());
    line("sessionwaittimeout", &opts.session_wait_timeout.as_secs());
    match &opts.kex_guess_file {
        Some(path) => line("kexguessfile", &path.display()),
        None => line("kexguessfile", &"none"),
    }
    if let Some(path) = &opts.password_file {
        line("passwordfile", &path.display());
    }
    if let Some(name) = &opts.password_env {
        line("passwordenv", name);
    }
    if let Some(path) = &opts.passphrase_file {
        line("passphrasefile", &path.display());
    }
    if let Some(name) = &opts.passphrase_env {
        line("passphraseenv", name);
    }
    Ok(out)
}

/// ssh's name for a log level.
fn log_level(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Quiet => "QUIET",
        LogLevel::Fatal => "FATAL",
        LogLevel::Error => "ERROR",
        LogLevel::Info => "INFO",
        LogLevel::Verbose => "VERBOSE",
        LogLevel::Debug1 => "DEBUG1",
        LogLevel::Debug2 => "DEBUG2",
        LogLevel::Debug3 => "DEBUG3",
    }
}

/// A forward as `ssh -G` shows it: `[bind]:port` or `port` or a path, then `[host]:port` or
/// a path (nothing more for a SOCKS forward).
fn forward_text(f: &ForwardSpec) -> String {
    let mut out = match &f.listen {
        Listen::Port {
            bind_address: Some(bind),
            port,
        } => format!("[{bind}]:{port}"),
        Listen::Port {
            bind_address: None,
            port,
        } => port.to_string(),
        Listen::Path(path) => path.display().to_string(),
    };
    match &f.to {
        Destination::Tcp(t) => {
            let _ = write!(out, " [{}]:{}", t.host, t.port);
        }
        Destination::Unix(path) => {
            let _ = write!(out, " {path}");
        }
        Destination::Socks => {}
    }
    out
}

/// The command with its run-time tokens written back (`%%` for a `%` in the text).
fn command_text(command: &crate::known_hosts::command::KnownHostsCommand) -> String {
    let mut out = command.program.display().to_string();
    for arg in &command.args {
        out.push(' ');
        for piece in arg {
            match piece {
                Piece::Text(t) => out.push_str(&t.replace('%', "%%")),
                Piece::LookupName => out.push_str("%H"),
                Piece::Invocation => out.push_str("%I"),
                Piece::KeyType => out.push_str("%t"),
                Piece::Fingerprint => out.push_str("%f"),
                Piece::Key => out.push_str("%K"),
            }
        }
    }
    out
}
