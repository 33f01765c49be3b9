//! The `forwarder` command: options to configs, keys from files, host key policy, the TCP
//! connection, listeners, and exit codes (255 on failure, as `ssh` uses).

use std::time::Duration;

use tracing::debug;

use crate::algorithms;
use crate::cli::{self, Command, Options};
use crate::config::TunnelConfig;
use crate::connect::{self, SshConnector};
use crate::forwards::Forwards;
use crate::supervisor::{BastionGate, Outcome, WaitError};

/// Exit status for every failure, as `ssh` uses.
pub const EXIT_FAILURE: i32 = 255;

/// A failure that ends the program, with the message to print.
#[derive(Debug)]
pub struct Fatal(pub String);

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<std::io::Error> for Fatal {
    fn from(e: std::io::Error) -> Self {
        Self(e.to_string())
    }
}

impl From<ssh_auth::KeyFileError> for Fatal {
    fn from(e: ssh_auth::KeyFileError) -> Self {
        Self(e.to_string())
    }
}

/// Runs the command line; returns the exit status.
pub fn run(args: Vec<std::ffi::OsString>) -> i32 {
    if args.first().is_some_and(|a| a == "serve") {
        return run_serve(&args[1..]);
    }
    if args.first().is_some_and(|a| a == "check") {
        return crate::check::run(&args[1..]);
    }
    #[cfg(unix)]
    let command_line = args.clone();
    let mut opts = match cli::parse_args(args) {
        Ok(Command::Help) => {
            print!("{}", cli::usage());
            return 0;
        }
        Ok(Command::Version) => {
            println!("{}", cli::version_text());
            return 0;
        }
        Ok(Command::Run(o)) => o,
        Ok(Command::Query(what)) => {
            return match algorithms::query(&what) {
                Some(names) => {
                    for n in names {
                        println!("{n}");
                    }
                    0
                }
                None => {
                    eprintln!(
                        "forwarder: -Q {what:?}: unknown query; try one of {}",
                        algorithms::QUERY_KINDS
                    );
                    EXIT_FAILURE
                }
            };
        }
        Ok(Command::Keygen(k)) => return crate::keygen::run(&k),
        Err(e) => {
            eprintln!("forwarder: {e}");
            return EXIT_FAILURE;
        }
    };
    if opts.print_config {
        return match cli::show::config_text(&opts) {
            Ok(text) => {
                print!("{text}");
                0
            }
            Err(e) => {
                eprintln!("forwarder: {e}");
                EXIT_FAILURE
            }
        };
    }
    if let Some(command) = opts.control_command {
        #[cfg(unix)]
        return crate::control::run_command(
            opts.control_path.as_deref(),
            command,
            control_forwards(&opts),
        );
        #[cfg(not(unix))]
        {
            eprintln!(
                "forwarder: -O {}: control sockets need Unix",
                command.word()
            );
            return EXIT_FAILURE;
        }
    }
    #[cfg(unix)]
    if let Some(path) = &opts.log_file {
        log_to_file(path);
    }
    // A master started for -W (ControlPersist): the same command line, without the -W.
    #[cfg(unix)]
    if crate::background::is_persist_master() {
        opts.stdio_forward = None;
    }
    #[cfg(unix)]
    if opts.fork_after_authentication && !crate::background::is_background() {
        if opts.stdio_forward.is_some() {
            eprintln!(
                "forwarder: -f cannot be used with -W: its standard input and output are the forward"
            );
            return EXIT_FAILURE;
        }
        // The same command line, in the background; warnings are its to print.
        return crate::background::run(&command_line);
    }
    init_logging(&opts);
    for w in &opts.warnings {
        eprintln!("forwarder: warning: {w}");
    }
    for n in &opts.notes {
        tracing::debug!("{n}");
    }
    // -W with a ControlPath: through the master there, if one answers, as ssh does.
    #[cfg(unix)]
    if let (Some(target), Some(path)) = (&opts.stdio_forward, opts.control_path.as_deref())
        && opts.local_forwards.is_empty()
        && let Some(status) = stdio_through_master(&opts, path, target, &command_line)
    {
        return status;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("forwarder: cannot start the async runtime: {e}");
            return EXIT_FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let result = run_async(opts).await;
        // The sessions are gone: let the key exchange choices reach the KexGuessFile.
        crate::kex_memory::settle().await;
        result
    });
    // A prompt still waiting (the session ended under it) must not leave echo off, nor keep
    // the program from exiting.
    crate::prompt::restore_terminal();
    runtime.shutdown_background();
    match result {
        Ok(()) => 0,
        Err(Fatal(msg)) => {
            eprintln!("forwarder: {msg}");
            EXIT_FAILURE
        }
    }
}

/// `-W` through the master at `path`: one that answers there (unless `ControlMaster yes`),
/// else, with `ControlPersist`, one started in the background for it. `None` when there is
/// none: this command then connects on its own.
#[cfg(unix)]
fn stdio_through_master(
    opts: &Options,
    path: &std::path::Path,
    target: &crate::tunnel::Destination,
    command_line: &[std::ffi::OsString],
) -> Option<i32> {
    if opts.control_master != cli::ControlMaster::Yes
        && let Some(status) = crate::control::stdio_through_master(path, target)
    {
        return Some(status);
    }
    if opts.control_master == cli::ControlMaster::No
        || opts.control_persist == cli::ControlPersist::No
    {
        return None;
    }
    if opts.control_master == cli::ControlMaster::Yes && std::fs::symlink_metadata(path).is_ok() {
        // As ssh with `yes`: whatever is there is left alone, and this connects on its own.
        crate::notice::warning(format!(
            "ControlSocket {} already exists, disabling multiplexing",
            path.display()
        ));
        return None;
    }
    debug!(path = %path.display(), "starting a master in the background (ControlPersist)");
    let started = crate::background::run_master(command_line);
    // Started, or not because another master took the path first: either way, through the
    // master there. Its failure (its error already on stderr) is this command's otherwise.
    crate::control::stdio_through_master(path, target).or(Some(started).filter(|s| *s != 0))
}

/// `forwarder serve ...`.
fn run_serve(args: &[std::ffi::OsString]) -> i32 {
    let args: Option<Vec<String>> = args.iter().map(|a| a.clone().into_string().ok()).collect();
    let Some(args) = args else {
        eprintln!("forwarder: serve: arguments must be UTF-8");
        return crate::fleet::EXIT_USAGE;
    };
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{}", crate::fleet::usage());
        return 0;
    }
    match crate::fleet::parse_args(&args) {
        Ok(opts) => crate::fleet::run(opts),
        Err(e) => {
            eprintln!("forwarder: {e}");
            crate::fleet::EXIT_USAGE
        }
    }
}

/// `-E`: standard error becomes `path`, opened for appending (created 0600), so that the log
/// and every error go there, as ssh does. A file that cannot be opened is said on standard
/// error, which stays, as in ssh.
#[cfg(unix)]
fn log_to_file(path: &std::path::Path) {
    use std::os::unix::fs::OpenOptionsExt as _;
    let opened = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .and_then(|file| rustix::stdio::dup2_stderr(&file).map_err(std::io::Error::from));
    if let Err(e) = opened {
        eprintln!(
            "forwarder: cannot log to {} (-E): {e}; logging to standard error",
            path.display()
        );
    }
}

fn init_logging(opts: &Options) {
    // -W is another program's ProxyCommand, whose stderr that program shows: at the default
    // level it says nothing but warnings and errors, as ssh -W does (so does a master a -W
    // starts, until it lets go of stderr). VERBOSE, -v or a log file (-E) has the rest.
    #[cfg(unix)]
    let behind = crate::background::is_persist_master();
    #[cfg(not(unix))]
    let behind = false;
    let level = if (opts.stdio_forward.is_some() || behind)
        && opts.log_level == cli::LogLevel::Info
        && opts.log_file.is_none()
    {
        tracing::level_filters::LevelFilter::WARN
    } else {
        opts.log_level.tracing_filter()
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .try_init();
}

async fn run_async(opts: Options) -> Result<(), Fatal> {
    let tunnel_config = TunnelConfig::from_options(&opts).map_err(|e| Fatal(e.0))?;
    // -W: standard input and output instead of listeners.
    if let Some(target) = opts.stdio_forward.clone() {
        return crate::stdio::run(tunnel_config, target).await;
    }
    // Listen first: a port that cannot be bound is known before any network traffic, and a
    // client that connects early waits for the session instead of being refused.
    let mut listeners = Vec::new();
    for (fwd, bound) in connect::bind_forwards(&tunnel_config).await {
        match bound {
            Ok(ls) => {
                for l in &ls {
                    debug!(listen = %l.label(), forward = %fwd, "listening");
                }
                listeners.push((fwd, ls));
            }
            Err(e) => {
                let msg = format!("cannot listen for {} {fwd}: {e}", fwd.flag());
                if tunnel_config.exit_on_forward_failure {
                    return Err(Fatal(format!("{msg} (ExitOnForwardFailure)")));
                }
                eprintln!("forwarder: warning: {msg}");
            }
        }
    }

    let remote_connect_limit = crate::remote::connect_limit(&tunnel_config);
    // How forwards added on the control socket bind.
    let forward_config = std::sync::Arc::new(tunnel_config.clone());
    let mut supervisor =
        SshConnector::supervise(tunnel_config.session, true, BastionGate::new()).await;
    let sessions = supervisor.handle();
    // -R added and cancelled on the control socket (-O forward, -O cancel).
    let (remote_changes, remote_changes_rx) = tokio::sync::mpsc::channel(16);
    let forwards = std::sync::Arc::new(Forwards::new(
        sessions.clone(),
        forward_config,
        remote_changes,
    ));
    for (fwd, bound) in listeners {
        forwards.serve(fwd, bound).await;
    }

    // The first session fails fast, as ssh does, so a mistake is seen at once.
    tokio::select! {
        r = sessions.first_session() => match r {
            Ok(handle) => {
                let log = handle.log();
                debug!(
                    "authenticated in {} ms",
                    log.auth_time.unwrap_or_default().as_millis()
                );
            }
            Err(WaitError::Failed(msg)) => return Err(Fatal(msg)),
            Err(e) => return Err(Fatal(e.to_string())),
        },
        _ = shutdown_signal() => {
            // Perhaps at a password prompt: put the terminal back and leave politely.
            crate::prompt::restore_terminal();
            supervisor.shutdown(Duration::from_secs(2)).await;
            return Err(Fatal("interrupted during authentication".into()));
        }
    }
    // -M: the control socket, once logged in (and before -f lets the foreground go), as ssh.
    let terminate = std::sync::Arc::new(tokio::sync::Notify::new());
    #[cfg(unix)]
    let _control = match crate::control::start(
        opts.control_master,
        opts.control_path.as_deref(),
        terminate.clone(),
        forwards.clone(),
        if crate::background::is_persist_master() {
            opts.control_persist
        } else {
            cli::ControlPersist::No
        },
    )
    .await
    {
        // A master started for -W is there for its socket alone.
        Ok(None) if crate::background::is_persist_master() => {
            forwards.close().await;
            supervisor.shutdown(Duration::from_secs(2)).await;
            return Err(Fatal(
                "no control socket to serve (another master is at the ControlPath)".into(),
            ));
        }
        Ok(control) => control,
        Err(e) => {
            forwards.close().await;
            supervisor.shutdown(Duration::from_secs(2)).await;
            return Err(Fatal(e.to_string()));
        }
    };
    // -R: requested again on every session the supervisor brings up.
    let remote_specs = opts.remote_forwards.iter();
    let remote_specs = remote_specs.map(crate::remote::RemoteSpec::from_forward);
    let (remote_stop, remote_stopped) = tokio::sync::watch::channel(false);
    let (remote_up, remote_granted) = tokio::sync::oneshot::channel();
    let mut remote = tokio::spawn(crate::remote::serve(
        sessions.clone(),
        remote_specs.collect(),
        tunnel_config.exit_on_forward_failure,
        remote_connect_limit,
        opts.permit_remote_open.clone(),
        remote_up,
        remote_stopped,
        remote_changes_rx,
    ));
    // -f: the background process lets the foreground one go once logged in, as ssh does; with
    // ExitOnForwardFailure, once every -R is granted too, so that a refused one is still an
    // exit status the script sees.
    #[cfg(unix)]
    if crate::background::is_background() {
        if tunnel_config.exit_on_forward_failure {
            tokio::select! {
                // Dropped unsent when serving ended: the arm below has its error.
                Ok(()) = remote_granted => {}
                Ok(Err(msg)) = &mut remote => {
                    forwards.close().await;
                    supervisor.shutdown(Duration::from_secs(2)).await;
                    return Err(Fatal(msg));
                }
                _ = shutdown_signal() => {
                    forwards.close().await;
                    supervisor.shutdown(Duration::from_secs(2)).await;
                    return Err(Fatal("interrupted while the remote forwards were requested".into()));
                }
            }
        }
        crate::background::ready();
        if crate::background::is_persist_master() && opts.log_file.is_none() {
            crate::background::let_go_of_stderr();
        }
    }
    let outcome = tokio::select! {
        o = supervisor.finished() => o,
        Ok(Err(msg)) = &mut remote => {
            forwards.close().await;
            supervisor.shutdown(Duration::from_secs(2)).await;
            return Err(Fatal(msg));
        }
        () = stop_requested(&terminate) => {
            debug!("stop requested, disconnecting");
            forwards.close().await;
            // The remote forwards are cancelled before the DISCONNECT.
            let _ = remote_stop.send(true);
            if !remote.is_finished() {
                let _ = tokio::time::timeout(Duration::from_secs(1), &mut remote).await;
            }
            supervisor.shutdown(Duration::from_secs(2)).await;
            return Ok(());
        }
    };
    forwards.close().await;
    match outcome {
        Outcome::Stopped => Ok(()),
        Outcome::Failed(msg) => Err(Fatal(msg)),
    }
}

/// The forwards `-O forward` and `-O cancel` send: `-L` and `-D`, then `-R`, as ssh sends
/// them.
fn control_forwards(opts: &Options) -> Vec<crate::mux::ForwardRequest> {
    use crate::mux::{ForwardRequest, ForwardWay};
    let local = opts.local_forwards.iter().map(|f| ForwardRequest {
        way: ForwardWay::Local,
        spec: f.clone(),
    });
    let remote = opts.remote_forwards.iter().map(|f| ForwardRequest {
        way: ForwardWay::Remote,
        spec: f.clone(),
    });
    local.chain(remote).collect()
}

/// SIGINT, SIGTERM, or `-O exit` on the control socket.
async fn stop_requested(terminate: &tokio::sync::Notify) {
    tokio::select! {
        () = shutdown_signal() => {}
        () = terminate.notified() => {}
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (mut int, mut term) = match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(int), Ok(term)) => (int, term),
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        // Ours from now on, a prompt's included: the caller puts the terminal back.
        crate::prompt::handled_by_program(&[
            rustix::process::Signal::INT,
            rustix::process::Signal::TERM,
        ]);
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
