//! `forwarder serve` with `kind = "remote"` tunnels against the real sshd: the bastion listens
//! (a fixed port and port 0), data goes byte for byte both ways through its port to an echo
//! server here, `/tunnels` shows the port and the traffic, the session is shared with a local
//! tunnel, and a reload that removes the remote tunnels closes the bastion's ports
//! (`cancel-tcpip-forward`) while the session and the local tunnel stay up. A refused forward
//! is a failed tunnel with the reason, not a crash. Every wait is bounded.

use std::time::{Duration, Instant};

use ssh_interop_tests::fleet::{Fleet, TunnelSpec, fleet_file};
use ssh_interop_tests::servers::{UnixEchoServer, echo_round_trip_unix};
use ssh_interop_tests::{
    EchoServer, KeyKind, Pattern, Sshd, UserKey, echo_round_trip, free_port, port_listening,
};

const LOGIN: &str = "Accepted publickey";
const WAIT: Duration = Duration::from_secs(30);

fn head(admin_port: u16, key: &UserKey, sshd: &Sshd) -> String {
    format!(
        "[admin]\nlisten = \"127.0.0.1:{admin_port}\"\ndrain_timeout = \"2s\"\nprobe_interval = \"2s\"\n\n\
         [defaults]\nbastion = \"{}@127.0.0.1:{}\"\nidentity_file = {:?}\nknown_hosts = {:?}\n\
         options = {{ ServerAliveInterval = 1, ServerAliveCountMax = 2, ReconnectBackoffMax = \"2s\" }}\n",
        sshd.user(),
        sshd.port(),
        key.private_key_path().display().to_string(),
        sshd.known_hosts_path().display().to_string(),
    )
}

/// A `kind = "remote"` tunnel table.
fn remote(name: &str, listen: &str, target_port: u16) -> String {
    format!(
        "[[tunnel]]\nname = {name:?}\nkind = \"remote\"\nbastion_listen = {listen:?}\n\
         target = \"127.0.0.1:{target_port}\"\n"
    )
}

fn assert_echo(port: u16, seed: u64, len: usize, what: &str) {
    let data = Pattern::get().bytes_at(seed.wrapping_mul(7919), len);
    match echo_round_trip(port, &data) {
        Ok(back) => assert!(back == data, "{what}: the echo differs"),
        Err(e) => panic!("{what}: {e}"),
    }
}

fn wait_listening(port: u16, listening: bool, what: &str) {
    let deadline = Instant::now() + WAIT;
    while port_listening(port) != listening {
        assert!(
            Instant::now() < deadline,
            "{what}: port {port} listening is not {listening}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tunnels(fleet: &mut Fleet, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let body = fleet.wait_for_admin("/tunnels", WAIT, |code, body| {
        code == 200 && serde_json::from_str::<serde_json::Value>(body).is_ok_and(|v| done(&v))
    });
    serde_json::from_str(&body).expect("JSON")
}

fn find<'a>(all: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    all.as_array()?.iter().find(|t| t["name"] == name)
}

/// The port at the end of a tunnel's `local` (`localhost:41234`).
fn port_of(t: &serde_json::Value) -> u16 {
    t["local"]
        .as_str()
        .and_then(|l| l.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {t}"))
}

#[test]
fn fleet_remote_tunnels_carry_data_show_in_tunnels_and_reload_cancels_them() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::builder().authorize(&key).start();
    let echo = EchoServer::start();
    let admin = free_port();
    let local_port = free_port();
    let fixed = free_port();
    let bastion = format!("{}@127.0.0.1:{}", sshd.user(), sshd.port());
    let local = TunnelSpec::new(
        "local",
        &bastion,
        local_port,
        &format!("127.0.0.1:{}", echo.port()),
    );
    let with_remote = format!(
        "{}\n{}\n{}",
        fleet_file(&head(admin, &key, &sshd), std::slice::from_ref(&local)),
        remote("callback", &fixed.to_string(), echo.port()),
        remote("picked", "0", echo.port()),
    );
    let mut fleet = Fleet::start(&with_remote, Some(admin), &["--log-format", "text"]);

    let all = tunnels(&mut fleet, |v| {
        ["local", "callback", "picked"]
            .iter()
            .all(|n| find(v, n).is_some_and(|t| t["state"] == "up"))
            && find(v, "picked").is_some_and(|t| t["local"] != "localhost:0")
    });
    let callback = find(&all, "callback").expect("callback");
    assert_eq!(callback["local"], format!("localhost:{fixed}"), "{all}");
    assert_eq!(
        callback["remote"],
        format!("127.0.0.1:{}", echo.port()),
        "{all}"
    );
    let picked = port_of(find(&all, "picked").expect("picked"));
    assert_ne!(picked, 0);
    fleet.wait_for_log_count(
        &format!("Allocated port {picked} for remote forward"),
        1,
        WAIT,
    );

    // Byte for byte both ways through the bastion's ports.
    wait_listening(fixed, true, "callback");
    assert_echo(fixed, 1, 1 << 20, "through the bastion's fixed port");
    // As for the fixed port: a CI run once found the allocated port refusing for a moment
    // after the fleet logged it.
    wait_listening(picked, true, "picked");
    assert_echo(picked, 2, 200_000, "through the bastion's allocated port");
    assert_echo(local_port, 3, 100_000, "the local tunnel");
    let all = tunnels(&mut fleet, |v| {
        find(v, "callback").is_some_and(|t| t["connections_total"].as_u64() >= Some(1))
    });
    let callback = find(&all, "callback").expect("callback");
    assert!(
        callback["bytes_to_remote"].as_u64() >= Some(1 << 20),
        "{all}"
    );
    assert!(
        callback["bytes_from_remote"].as_u64() >= Some(1 << 20),
        "{all}"
    );
    assert_eq!(
        sshd.log().matches(LOGIN).count(),
        1,
        "one session for all three"
    );

    // A reload without the remote tunnels: the bastion stops listening, the session stays.
    let only_local = fleet_file(&head(admin, &key, &sshd), std::slice::from_ref(&local));
    fleet.rewrite(&only_local);
    fleet.reload();
    wait_listening(fixed, false, "the removed fixed-port tunnel");
    wait_listening(picked, false, "the removed port-0 tunnel");
    tunnels(&mut fleet, |v| {
        find(v, "callback").is_none() && find(v, "local").is_some_and(|t| t["state"] == "up")
    });
    assert_echo(local_port, 4, 100_000, "the local tunnel after the reload");
    assert_eq!(
        sshd.log().matches(LOGIN).count(),
        1,
        "the ports closed by cancel-tcpip-forward, not by a new session"
    );
    assert!(fleet.exited().is_none(), "{}", fleet.log());
}

#[test]
fn fleet_remote_tunnel_refused_is_failed_with_the_reason() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::builder()
        .config("AllowTcpForwarding local")
        .authorize(&key)
        .start();
    let echo = EchoServer::start();
    let admin = free_port();
    let fixed = free_port();
    let text = format!(
        "{}\n{}",
        head(admin, &key, &sshd),
        remote("refused", &fixed.to_string(), echo.port())
    );
    let mut fleet = Fleet::start(&text, Some(admin), &["--log-format", "text"]);
    let all = tunnels(&mut fleet, |v| {
        find(v, "refused").is_some_and(|t| t["state"] == "failed")
    });
    let t = find(&all, "refused").expect("refused");
    assert!(
        t["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(&format!(
                "remote port forwarding failed for listen port {fixed}"
            ))),
        "{all}"
    );
    let (code, _) = fleet.get("/readyz").expect("/readyz answers");
    assert_ne!(code, 200, "a failed tunnel is not ready");
    // Its session is up, but nothing listens for it on the bastion: not up.
    let (code, metrics) = fleet.get("/metrics").expect("/metrics answers");
    assert_eq!(code, 200);
    let session_up = format!(
        "forwarder_session_up{{session=\"{}@127.0.0.1:{}\"}} 1",
        sshd.user(),
        sshd.port()
    );
    assert!(metrics.lines().any(|l| l == session_up), "{metrics}");
    assert!(
        metrics.contains("forwarder_tunnel_up{tunnel=\"refused\"} 0\n"),
        "{metrics}"
    );
    assert!(fleet.exited().is_none(), "{}", fleet.log());
}

#[test]
fn fleet_remote_tunnel_moved_to_another_target_on_the_same_port_is_listening_again() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::builder().authorize(&key).start();
    let (first, second) = (EchoServer::start(), EchoServer::start());
    let admin = free_port();
    let fixed = free_port();
    let file = |target: u16| {
        format!(
            "{}\n{}",
            head(admin, &key, &sshd),
            remote("callback", &fixed.to_string(), target)
        )
    };
    let mut fleet = Fleet::start(&file(first.port()), Some(admin), &["--log-format", "text"]);
    tunnels(&mut fleet, |v| {
        find(v, "callback").is_some_and(|t| t["state"] == "up")
    });
    wait_listening(fixed, true, "callback");
    assert_echo(fixed, 5, 64 * 1024, "to the first target");
    assert!(first.connections() >= 1);

    // The same bastion port, another target: the old forward's cancel reaches sshd before
    // the new request, which sshd would refuse while the port is still taken.
    for round in 0..3 {
        let (to, from) = if round % 2 == 0 {
            (&second, &first)
        } else {
            (&first, &second)
        };
        let before = to.connections();
        fleet.rewrite(&file(to.port()));
        fleet.reload();
        let all = tunnels(&mut fleet, |v| {
            find(v, "callback").is_some_and(|t| {
                t["remote"] == format!("127.0.0.1:{}", to.port())
                    && (t["state"] == "up" || t["state"] == "failed")
            })
        });
        let t = find(&all, "callback").expect("callback");
        assert_eq!(t["state"], "up", "round {round}: {all}");
        wait_listening(fixed, true, "callback, moved");
        let from_before = from.connections();
        assert_echo(fixed, 6 + round, 64 * 1024, "to the new target");
        assert!(
            to.connections() > before,
            "round {round}: not the new target"
        );
        assert_eq!(from.connections(), from_before, "round {round}");
    }
    assert_eq!(
        sshd.log().matches(LOGIN).count(),
        1,
        "one session throughout"
    );
}

// `bastion_listen` as a socket path on the bastion (streamlocal-forward): `/tunnels` shows the
// path, data goes both ways through the bastion's socket to a socket here, and a reload
// that removes the tunnel cancels the forward (nothing listens on the file any more, which
// sshd leaves in place) while the session stays.
#[test]
fn fleet_remote_tunnel_on_a_bastion_socket_carries_data_and_reload_cancels_it() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::builder().authorize(&key).start();
    let dir = tempfile::tempdir().expect("temp dir");
    let here = dir.path().join("echo.sock");
    let there = dir.path().join("bastion.sock");
    let _echo = UnixEchoServer::start(&here);
    let admin = free_port();
    let with_remote = format!(
        "{}\n[[tunnel]]\nname = \"socket\"\nkind = \"remote\"\nbastion_listen = {:?}\n\
         target = {:?}\n",
        head(admin, &key, &sshd),
        there.display().to_string(),
        here.display().to_string(),
    );
    let mut fleet = Fleet::start(&with_remote, Some(admin), &["--log-format", "text"]);
    let all = tunnels(&mut fleet, |v| {
        find(v, "socket").is_some_and(|t| t["state"] == "up")
    });
    let t = find(&all, "socket").expect("socket");
    assert_eq!(t["local"], there.display().to_string(), "{all}");
    assert_eq!(t["remote"], here.display().to_string(), "{all}");
    let data = Pattern::get().bytes_at(11, 1 << 20);
    match echo_round_trip_unix(&there, &data) {
        Ok(back) => assert!(back == data, "the echo differs"),
        Err(e) => panic!("through the bastion's socket: {e}: {}", fleet.log()),
    }

    // Removed by a reload: the forward is cancelled on the same session.
    fleet.rewrite(&head(admin, &key, &sshd));
    fleet.reload();
    let deadline = Instant::now() + WAIT;
    while std::os::unix::net::UnixStream::connect(&there).is_ok() {
        assert!(
            Instant::now() < deadline,
            "still listening: {}",
            fleet.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        sshd.log()
            .contains("cancel-streamlocal-forward@openssh.com"),
        "{}",
        sshd.log()
    );
    assert_eq!(sshd.log().matches(LOGIN).count(), 1, "one session");
    assert!(fleet.exited().is_none(), "{}", fleet.log());
}
