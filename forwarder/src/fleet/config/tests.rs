use super::*;

fn env() -> Environment {
    Environment {
        home: Some(PathBuf::from("/home/tester")),
        user: Some("tester".into()),
        cache_home: None,
    }
}

fn ok(_: &Path) -> Result<(), String> {
    Ok(())
}

fn parse_ok(text: &str) -> FleetConfig {
    match parse("tunnels.toml", text, &env(), &ok) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

fn parse_err(text: &str) -> String {
    match parse("tunnels.toml", text, &env(), &ok) {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => e.to_string(),
    }
}

const EXAMPLE: &str = r#"
[admin]
listen = "127.0.0.1:9180"
drain_timeout = "45s"
probe_interval = 90
handshakes_per_bastion = 2

[admin.bastion_handshakes]
"bastion.acme.example:2222" = 1

[defaults]
user = "sigmacomputing"
identity_file = "/etc/forwarder/id_rsa"
known_hosts = ["/etc/forwarder/known_hosts", "/etc/forwarder/known_hosts2"]

[[tunnel]]
name = "acme-pg"
bastion = "bastion.acme.example"
local = "127.0.0.1:15432"
remote = "db.internal:5432"
probe = "postgres"
options = { Ciphers = "aes256-gcm@openssh.com", ServerAliveInterval = 10 }

[[tunnel]]
name = "acme-mysql"
bastion = "ops@bastion.acme.example:2222"
local = "127.0.0.1:13306"
remote = "mysql.internal:3306"
probe = "mysql"
share_session = false
"#;

#[test]
fn the_documented_example_loads() {
    let c = parse_ok(EXAMPLE);
    assert_eq!(c.admin.listen, Some("127.0.0.1:9180".parse().unwrap()));
    assert_eq!(c.admin.drain_timeout, Duration::from_secs(45));
    assert_eq!(c.admin.probe_interval, Duration::from_secs(90));
    assert_eq!(c.admin.handshakes_per_bastion, 2);
    // acme-mysql's bastion, on port 2222, is handled one at a time; acme-pg's, on 22, takes
    // the default.
    assert_eq!(c.admin.handshakes_for("bastion.acme.example", 2222), 1);
    assert_eq!(c.admin.handshakes_for("bastion.acme.example", 22), 2);
    assert!(unused_bastion_limits(&c).is_empty());
    let [pg, my] = &c.tunnels[..] else {
        panic!("{:?}", c.tunnels)
    };
    assert_eq!(pg.name, "acme-pg");
    assert_eq!(pg.line, 16);
    assert_eq!(pg.probe, ProbeKind::Postgres);
    assert!(pg.share_session);
    let s = &pg.config.session;
    assert_eq!(
        (s.user.as_str(), s.host.as_str(), s.port),
        ("sigmacomputing", "bastion.acme.example", 22)
    );
    assert_eq!(s.transport.ciphers.len(), 1);
    assert_eq!(s.server_alive.unwrap().interval, Duration::from_secs(10));
    assert!(s.options.batch_mode, "a daemon never prompts");
    assert_eq!(
        s.options.user_known_hosts_files,
        vec![
            PathBuf::from("/etc/forwarder/known_hosts"),
            PathBuf::from("/etc/forwarder/known_hosts2")
        ]
    );
    assert_eq!(
        s.options.identity_files,
        vec![PathBuf::from("/etc/forwarder/id_rsa")]
    );
    assert_eq!(pg.config.forwards.len(), 1);
    assert_eq!(
        pg.config.forwards[0],
        ForwardSpec::tcp(Some("127.0.0.1"), 15432, "db.internal", 5432)
    );
    assert_eq!(pg.remote.to_string(), "db.internal:5432");

    // A user in `bastion` wins over `user`; the port comes from it too.
    let s = &my.config.session;
    assert_eq!((s.user.as_str(), s.port), ("ops", 2222));
    assert!(!my.share_session);
    assert_eq!(my.probe, ProbeKind::Mysql);
}

#[test]
fn bastion_handshakes_set_some_bastions_limits_by_host_or_host_and_port() {
    let c = parse_ok(
        r#"
[admin]
handshakes_per_bastion = 6
bastion_handshakes = { "Bastion.Acme.Example" = 2, "bastion.acme.example:2222" = 8, "[2001:db8::1]:2200" = 3, "2001:db8::2" = 5, "unused.example" = 1 }

[[tunnel]]
name = "a"
bastion = "bastion.acme.example"
local = "127.0.0.1:1"
remote = "r:1"

[[tunnel]]
name = "b"
bastion = "[2001:db8::1]:2200"
local = "127.0.0.1:2"
remote = "r:1"

[[tunnel]]
name = "behind-a-jump"
bastion = "inner.example"
jump = ["j@BASTION.acme.example:2222"]
local = "127.0.0.1:3"
remote = "r:1"
"#,
    );
    let a = &c.admin;
    // A host without a port is every port of it, in any case; a port named wins.
    assert_eq!(a.handshakes_for("bastion.acme.example", 22), 2);
    assert_eq!(a.handshakes_for("BASTION.acme.example", 2200), 2);
    assert_eq!(a.handshakes_for("bastion.acme.example", 2222), 8);
    assert_eq!(a.handshakes_for("2001:db8::1", 2200), 3);
    assert_eq!(a.handshakes_for("[2001:db8::1]", 2200), 3);
    assert_eq!(a.handshakes_for("2001:db8::1", 22), 6);
    assert_eq!(a.handshakes_for("2001:db8::2", 2222), 5);
    assert_eq!(a.handshakes_for("other.example", 22), 6);
    // Each tunnel's limit is its first host's: the jump host's for a chain.
    let first = |t: &TunnelEntry| {
        let (h, p) = t.config.session.first_host();
        a.handshakes_for(h, p)
    };
    let limits: Vec<usize> = c.tunnels.iter().map(first).collect();
    assert_eq!(limits, [2, 3, 8]);
    // Entries no tunnel starts at are named, with their lines.
    let unused = unused_bastion_limits(&c);
    assert_eq!(unused.len(), 2, "{unused:?}");
    assert!(unused[0].contains("\"2001:db8::2\" (line 4)"), "{unused:?}");
    assert!(
        unused[1].contains("\"unused.example\" (line 4)"),
        "{unused:?}"
    );
}

#[test]
fn defaults_apply_when_the_file_gives_none() {
    let c = parse_ok(
        r#"
[[tunnel]]
name = "a"
bastion = "b"
local = "127.0.0.1:1"
remote = "r:1"
"#,
    );
    assert_eq!(c.admin.listen, None);
    assert_eq!(c.admin.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
    assert_eq!(
        c.admin.handshakes_per_bastion,
        crate::supervisor::HANDSHAKES_PER_BASTION
    );
    assert!(c.admin.bastion_handshakes.is_empty());
    assert_eq!(
        c.admin.handshakes_for("b", 22),
        c.admin.handshakes_per_bastion
    );
    assert_eq!(c.tunnels[0].probe, ProbeKind::Tcp);
    assert_eq!(c.tunnels[0].config.session.user, "tester");
    assert!(c.tunnels[0].share_session);
    // The fleet's threads carry many sessions: its signatures are made off them.
    assert!(c.tunnels[0].config.session.handshake_off_thread);
}

#[test]
fn equal_sessions_have_equal_keys_and_anything_that_decides_a_session_changes_the_key() {
    let tunnel = |name: &str, port: u16, extra: &str| {
        format!(
            "[[tunnel]]\nname = \"{name}\"\nbastion = \"u@b\"\nlocal = \"127.0.0.1:{port}\"\nremote = \"db:{port}\"\n{extra}\n"
        )
    };
    let c = parse_ok(&format!(
        "{}{}{}{}{}",
        tunnel("a", 1, ""),
        tunnel("b", 2, "probe = \"none\""),
        tunnel("c", 3, "known_hosts = \"/other\""),
        tunnel("d", 4, "options = { ServerAliveInterval = \"5\" }"),
        tunnel("e", 5, "identity_file = [\"/k1\", \"/k2\"]"),
    ));
    let keys: Vec<_> = c.tunnels.iter().map(|t| &t.session_args).collect();
    assert_eq!(
        keys[0], keys[1],
        "the remote and probe do not decide the session"
    );
    for (i, k) in keys.iter().enumerate().skip(2) {
        assert_ne!(keys[0], *k, "tunnel {i}");
    }
}

#[test]
fn same_as_sees_every_change() {
    let a = parse_ok(EXAMPLE);
    let b = parse_ok(&EXAMPLE.replace("db.internal:5432", "db2.internal:5432"));
    let c = parse_ok(&EXAMPLE.replace("ServerAliveInterval = 10", "ServerAliveInterval = 11"));
    assert!(a.tunnels[0].same_as(&a.tunnels[0]));
    assert!(a.tunnels[1].same_as(&b.tunnels[1]));
    assert!(!a.tunnels[0].same_as(&b.tunnels[0]));
    assert!(!a.tunnels[0].same_as(&c.tunnels[0]));
}

#[test]
fn bad_files_name_the_line_and_the_key() {
    let base =
        "[[tunnel]]\nname = \"a\"\nbastion = \"b\"\nlocal = \"127.0.0.1:1\"\nremote = \"r:1\"\n";
    let cases: &[(&str, &str)] = &[
        (
            "[[tunnel]]\nname = \"a\"\nbastion = \"b\"\nlocal = \"127.0.0.1:1\"\nremote = \"r:1\"\nlocl = 3\n",
            "tunnels.toml:6: unknown field `locl`",
        ),
        (
            "[admin]\nlisten = \"nowhere\"\n",
            "tunnels.toml:2: admin: key `listen`",
        ),
        (
            "[admin]\ndrain_timeout = \"soon\"\n",
            "tunnels.toml:2: admin: key `drain_timeout`",
        ),
        (
            "[admin]\nprobe_interval = 0\n",
            "tunnels.toml:2: admin: key `probe_interval`",
        ),
        (
            "[admin]\nhandshakes_per_bastion = 0\n",
            "tunnels.toml:2: admin: key `handshakes_per_bastion`: expected a number from 1 to 64, got 0",
        ),
        (
            "[admin]\nhandshakes_per_bastion = 65\n",
            "tunnels.toml:2: admin: key `handshakes_per_bastion`",
        ),
        (
            "[admin]\nhandshakes_per_bastion = -1\n",
            "tunnels.toml:2: admin: key `handshakes_per_bastion`",
        ),
        (
            "[admin]\nhandshakes_per_bastion = \"4\"\n",
            "tunnels.toml:2:",
        ),
        (
            "[admin.bastion_handshakes]\n\"b\" = 2\n\"b:22\" = 0\n",
            "tunnels.toml:3: admin: key `bastion_handshakes.\"b:22\"`: expected a number from 1 to 64, got 0",
        ),
        (
            "[admin.bastion_handshakes]\n\"b\" = 65\n",
            "tunnels.toml:2: admin: key `bastion_handshakes.\"b\"`",
        ),
        (
            "[admin.bastion_handshakes]\n\"b\" = \"2\"\n",
            "tunnels.toml:2:",
        ),
        (
            "[admin.bastion_handshakes]\n\"user@b\" = 2\n",
            "tunnels.toml:2: admin: key `bastion_handshakes`: \"user@b\" is not a bastion's host or host:port",
        ),
        (
            "[admin.bastion_handshakes]\n\"b:0\" = 2\n",
            "tunnels.toml:2: admin: key `bastion_handshakes`: \"b:0\" is not",
        ),
        (
            "[admin.bastion_handshakes]\n\"b:x\" = 2\n",
            "tunnels.toml:2: admin: key `bastion_handshakes`: \"b:x\" is not",
        ),
        (
            "[admin.bastion_handshakes]\n\"\" = 2\n",
            "tunnels.toml:2: admin: key `bastion_handshakes`: \"\" is not",
        ),
        (
            "[admin.bastion_handshakes]\n\"[::1\" = 2\n",
            "tunnels.toml:2: admin: key `bastion_handshakes`: \"[::1\" is not",
        ),
        (
            "[admin.bastion_handshakes]\n\"b c\" = 2\n",
            "tunnels.toml:2: admin: key `bastion_handshakes`: \"b c\" is not",
        ),
        (
            "[admin.bastion_handshakes]\n\"B:22\" = 2\n\"b:22\" = 3\n",
            "admin: key `bastion_handshakes`: \"b:22\" names the same bastion as \"B:22\" on line 2",
        ),
        ("[admin]\nport = 1\n", "unknown field `port`"),
        ("[[tunnel]]\nname = \"a\"\n", "key `local` is missing"),
        ("this is not toml", "tunnels.toml:1:"),
        (
            &format!("{base}\n{base}"),
            "tunnels.toml:8: tunnel \"a\": key `name`: the name is already used by the tunnel on line 1",
        ),
        (
            &format!("{base}\n{}", base.replace("\"a\"", "\"b2\"")),
            "tunnels.toml:10: tunnel \"b2\": key `local`: 127.0.0.1:1 is already the local address of tunnel \"a\" (line 1)",
        ),
        (
            &base.replace("127.0.0.1:1\"", "127.0.0.1\""),
            "tunnels.toml:4: tunnel \"a\": key `local`",
        ),
        (
            &base.replace("r:1", "r"),
            "tunnels.toml:5: tunnel \"a\": key `remote`",
        ),
        (&base.replace("r:1", "r:0"), "key `remote`"),
        (
            &base.replace("bastion = \"b\"", "bastion = \"@b\""),
            "tunnels.toml:3: tunnel \"a\": key `bastion`",
        ),
        (
            &base.replace("bastion = \"b\"\n", ""),
            "key `bastion` is missing",
        ),
        (
            &format!("{base}probe = \"redis\"\n"),
            "tunnels.toml:6: tunnel \"a\": key `probe`",
        ),
        (
            &format!("{base}options = {{ Ciphers = \"rot13\" }}\n"),
            "tunnels.toml:6: tunnel \"a\": ",
        ),
        (
            &format!("{base}options = {{ NoSuchOption = \"1\" }}\n"),
            "tunnels.toml:6: tunnel \"a\": ",
        ),
        (
            &format!("{base}options = {{ ServerAliveInterval = \"often\" }}\n"),
            "tunnels.toml:6:",
        ),
        (
            &format!("{base}options = {{ LocalForward = \"1 r:2\" }}\n"),
            "`LocalForward` is set by the tunnel's own keys",
        ),
        (
            &format!("{base}probe_user = \"p\"\n"),
            "needs `probe_password_file`",
        ),
        (
            &format!("{base}options = {{ ControlMaster = \"auto\" }}\n"),
            "tunnels.toml:6: tunnel \"a\": ControlMaster is for a single forwarder command",
        ),
        (
            &format!("{base}options = {{ ControlPath = \"/run/cm\" }}\n"),
            "ControlPath is for a single forwarder command",
        ),
        (
            &format!("{base}options = {{ ControlPersist = \"10m\" }}\n"),
            "ControlPersist is for a single forwarder command",
        ),
        (
            &format!("{base}options = {{ ForkAfterAuthentication = \"yes\" }}\n"),
            "ForkAfterAuthentication is for a single forwarder command",
        ),
        (
            &format!("{base}share_session = \"yes\"\n"),
            "tunnels.toml:6: invalid type",
        ),
    ];
    for (text, want) in cases {
        let got = parse_err(text);
        assert!(got.contains(want), "{text:?}\n got: {got}\nwant: {want}");
    }
}

#[test]
fn unreadable_key_files_are_named() {
    let text = "[[tunnel]]\nname = \"a\"\nbastion = \"b\"\nlocal = \"127.0.0.1:1\"\nremote = \"r:1\"\nidentity_file = \"~/missing\"\n";
    let no = |p: &Path| Err(format!("{}: No such file or directory", p.display()));
    let e = parse("f.toml", text, &env(), &no).unwrap_err().to_string();
    assert!(
        e.starts_with("f.toml:6: tunnel \"a\": key `identity_file`"),
        "{e}"
    );
    assert!(e.contains("/home/tester/missing"), "{e}");
}

#[test]
fn ipv6_and_localhost_locals() {
    let c = parse_ok(
        "[[tunnel]]\nname = \"a\"\nbastion = \"u@[fd00::1]:2200\"\nlocal = \"[::1]:15432\"\nremote = \"[fd00::5]:5432\"\n",
    );
    let t = &c.tunnels[0];
    assert_eq!(
        (t.config.session.host.as_str(), t.config.session.port),
        ("fd00::1", 2200)
    );
    assert_eq!(
        t.config.forwards[0],
        ForwardSpec::tcp(Some("::1"), 15432, "fd00::5", 5432)
    );
    let e = parse_err(
        "[[tunnel]]\nname = \"a\"\nbastion = \"b\"\nlocal = \"localhost:5\"\nremote = \"r:1\"\n[[tunnel]]\nname = \"b\"\nbastion = \"b\"\nlocal = \"127.0.0.1:5\"\nremote = \"r:1\"\n",
    );
    assert!(e.contains("already the local address"), "{e}");
}

#[test]
fn jump_hosts_are_dash_j_and_decide_whether_sessions_are_shared() {
    let tunnel = |name: &str, port: u16, extra: &str| {
        format!(
            "[[tunnel]]\nname = \"{name}\"\nbastion = \"u@b\"\nlocal = \"127.0.0.1:{port}\"\nremote = \"db:{port}\"\n{extra}\n"
        )
    };
    let c = parse_ok(&format!(
        "[defaults]\njump = [\"j1user@j1:2222\", \"j2\"]\n{}{}{}{}",
        tunnel("a", 1, ""),
        tunnel("b", 2, ""),
        tunnel("c", 3, "jump = \"j1user@j1:2222\""),
        tunnel("d", 4, "jump = []"),
    ));
    let t = &c.tunnels;
    assert_eq!(
        t[0].session_args, t[1].session_args,
        "same chain, one session"
    );
    assert_ne!(t[0].session_args, t[2].session_args);
    let hops: Vec<String> = t[0]
        .config
        .session
        .jump
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(hops, ["j1user@j1:2222", "tester@j2:22"]);
    assert_eq!(t[0].config.session.user, "u");
    assert_eq!(t[2].config.session.jump.len(), 1);
    assert!(t[3].config.session.jump.is_empty());
    assert!(parse_err(&tunnel("e", 5, "jump = [\"a b\"]")).contains("key `jump`"));
}

#[test]
fn remote_tunnels_have_bastion_listen_and_target_and_share_sessions() {
    let c = parse_ok(
        "[defaults]\nbastion = \"u@b\"\nprobe = \"postgres\"\n\
         [[tunnel]]\nname = \"l\"\nlocal = \"127.0.0.1:1\"\nremote = \"db:1\"\n\
         [[tunnel]]\nname = \"r\"\nkind = \"remote\"\nbastion_listen = \"0\"\ntarget = \"127.0.0.1:8080\"\n\
         [[tunnel]]\nname = \"r2\"\nkind = \"remote\"\nbastion_listen = \"[::1]:8022\"\ntarget = \"app:80\"\n",
    );
    let [l, r, r2] = &c.tunnels[..] else {
        panic!("{:?}", c.tunnels)
    };
    assert_eq!(l.kind, TunnelKind::Local);
    assert_eq!(l.probe, ProbeKind::Postgres);
    let TunnelKind::Remote(spec) = &r.kind else {
        panic!("{:?}", r.kind)
    };
    assert_eq!(spec.listen, ForwardListen::tcp("localhost", 0));
    assert_eq!(spec.target.to_string(), "127.0.0.1:8080");
    assert_eq!(
        r.probe,
        ProbeKind::None,
        "the defaults' probe is for local tunnels"
    );
    assert_eq!(r.local, "0");
    assert_eq!(l.session_args, r.session_args, "one session for both kinds");
    let TunnelKind::Remote(spec) = &r2.kind else {
        panic!("{:?}", r2.kind)
    };
    assert_eq!(spec.listen, ForwardListen::tcp("::1", 8022));
    assert!(!r.same_as(r2));
}

#[test]
fn keys_of_the_other_kind_are_refused_with_their_line() {
    let head = "[[tunnel]]\nname = \"t\"\nbastion = \"b\"\n";
    let e = parse_err(&format!(
        "{head}kind = \"remote\"\nlocal = \"127.0.0.1:1\"\nbastion_listen = \"1\"\ntarget = \"a:1\"\n"
    ));
    assert!(e.starts_with("tunnels.toml:5:"), "{e}");
    assert!(e.contains("key `local` is not for a remote tunnel"), "{e}");
    let e = parse_err(&format!(
        "{head}local = \"127.0.0.1:1\"\nremote = \"a:1\"\nbastion_listen = \"1\"\n"
    ));
    assert!(e.starts_with("tunnels.toml:6:"), "{e}");
    assert!(
        e.contains("key `bastion_listen` is not for a local tunnel"),
        "{e}"
    );
    let e = parse_err(&format!("{head}kind = \"sideways\"\n"));
    assert!(
        e.starts_with("tunnels.toml:4:") && e.contains("key `kind`"),
        "{e}"
    );
    let e = parse_err(&format!("{head}kind = \"remote\"\ntarget = \"a:1\"\n"));
    assert!(e.contains("key `bastion_listen` is missing"), "{e}");
    let e = parse_err(&format!(
        "{head}kind = \"remote\"\nbastion_listen = \"host\"\ntarget = \"a:1\"\n"
    ));
    assert!(
        e.starts_with("tunnels.toml:5:") && e.contains("key `bastion_listen`"),
        "{e}"
    );
    let e = parse_err(&format!(
        "{head}kind = \"remote\"\nbastion_listen = \"1\"\ntarget = \"a\"\n"
    ));
    assert!(
        e.starts_with("tunnels.toml:6:") && e.contains("key `target`"),
        "{e}"
    );
    let e = parse_err(&format!(
        "{head}kind = \"remote\"\nbastion_listen = \"1\"\ntarget = \"a:1\"\nprobe = \"tcp\"\n"
    ));
    assert!(
        e.starts_with("tunnels.toml:7:") && e.contains("key `probe`"),
        "{e}"
    );
}

/// A local tunnel on `local`, named `name`, through bastion `b`.
fn local(name: &str, local: &str, extra: &str) -> String {
    format!(
        "[[tunnel]]\nname = \"{name}\"\nbastion = \"u@b\"\nlocal = \"{local}\"\nremote = \"db:1\"\n{extra}\n"
    )
}

/// A remote tunnel asking `bastion` to listen on `listen`.
fn remote(name: &str, bastion: &str, listen: &str, extra: &str) -> String {
    format!(
        "[[tunnel]]\nname = \"{name}\"\nkind = \"remote\"\nbastion = \"{bastion}\"\n\
         bastion_listen = \"{listen}\"\ntarget = \"127.0.0.1:8080\"\n{extra}\n"
    )
}

// `bastion_listen` may be an absolute socket path on the bastion (streamlocal-forward);
// two remote tunnels on one path through one bastion login clash, compared as paths.
#[test]
fn remote_tunnels_may_have_the_bastion_listen_on_a_socket() {
    let c = parse_ok(&remote("r", "u@b", "/run/fwd/app.sock", ""));
    let TunnelKind::Remote(spec) = &c.tunnels[0].kind else {
        panic!("a remote tunnel: {c:?}");
    };
    assert_eq!(spec.listen, ForwardListen::unix("/run/fwd/app.sock"));
    assert_eq!(spec.label(), "/run/fwd/app.sock");
    assert_eq!(c.tunnels[0].local, "/run/fwd/app.sock");
    let e = parse_err(&remote("r", "u@b", "run/app.sock", ""));
    assert!(
        e.contains("key `bastion_listen`: \"run/app.sock\" is not an absolute"),
        "{e}"
    );
    let e = parse_err(&format!(
        "{}{}",
        remote("first", "u@b", "/run/a.sock", ""),
        remote("second", "u@b", "/run//a.sock", "")
    ));
    assert!(
        e.contains("key `bastion_listen`") && e.contains("already listens on /run/a.sock"),
        "{e}"
    );
    for (b1, l1, b2, l2) in [
        ("u@b", "/run/a.sock", "u@c", "/run/a.sock"),
        ("u@b", "/run/a.sock", "u@b", "/run/b.sock"),
        ("u@b", "/run/a.sock", "u@b", "8022"),
    ] {
        let text = format!(
            "{}{}",
            remote("first", b1, l1, ""),
            remote("second", b2, l2, "")
        );
        assert_eq!(parse_ok(&text).tunnels.len(), 2, "{text}");
    }
}

#[test]
fn remote_tunnels_on_one_bastion_login_cannot_ask_for_the_same_port() {
    // The same port on the same bastion login: refused, naming the file, the line and both
    // tunnels.
    let e = parse_err(&format!(
        "{}{}",
        remote("first", "u@b", "8022", ""),
        remote("second", "u@b:22", "localhost:8022", "")
    ));
    assert!(
        e.starts_with("tunnels.toml:12: tunnel \"second\": key `bastion_listen`"),
        "{e}"
    );
    assert!(
        e.contains("already listens on localhost:8022 for tunnel \"first\" (line 1)"),
        "{e}"
    );
    assert!(e.contains("u@b:22"), "{e}");
    // Also when they do not share a session (the bastion refuses the second all the same),
    // and when one asks for every address.
    for (a, b, extra) in [
        ("8022", "8022", "share_session = false"),
        ("8022", "*:8022", ""),
        ("0.0.0.0:8022", "127.0.0.1:8022", ""),
        ("[::1]:8022", "localhost:8022", ""),
        ("Localhost:8022", "localhost:8022", ""),
        ("gw.example:8022", "GW.example:8022", ""),
        ("8022", "8022", "options = { ServerAliveInterval = 5 }"),
    ] {
        let text = format!(
            "{}{}",
            remote("first", "u@b", a, ""),
            remote("second", "u@b", b, extra)
        );
        let e = parse_err(&text);
        assert!(e.contains("key `bastion_listen`"), "{a} {b}: {e}");
    }
    // Other bastions, other logins, other jump hosts, port 0, or addresses that differ on
    // one port (sshd's GatewayPorts clientspecified listens where it is asked): fine.
    for (b1, l1, b2, l2, extra) in [
        ("u@b", "8022", "u@c", "8022", ""),
        ("u@b", "8022", "u@b:2222", "8022", ""),
        ("u@b", "8022", "v@b", "8022", ""),
        ("u@b", "8022", "u@b", "8022", "jump = \"j\""),
        ("u@b", "0", "u@b", "0", ""),
        ("u@b", "8022", "u@b", "8023", ""),
        ("u@b", "10.0.0.1:8022", "u@b", "10.0.0.2:8022", ""),
        ("u@b", "127.0.0.1:8022", "u@b", "[::1]:8022", ""),
    ] {
        let text = format!(
            "{}{}",
            remote("first", b1, l1, ""),
            remote("second", b2, l2, extra)
        );
        assert_eq!(parse_ok(&text).tunnels.len(), 2, "{text}");
    }
    // A local tunnel on the port a remote tunnel has the bastion listen on is something else.
    let c = parse_ok(&format!(
        "{}{}",
        remote("r", "u@b", "127.0.0.1:8022", ""),
        local("l", "127.0.0.1:8022", "")
    ));
    assert_eq!(c.tunnels.len(), 2);
}

#[test]
fn overlapping_local_addresses_are_refused() {
    for (a, b) in [
        ("0.0.0.0:15432", "127.0.0.1:15432"),
        ("127.0.0.1:15432", "0.0.0.0:15432"),
        ("*:15432", "127.0.0.1:15432"),
        ("*:15432", "[::1]:15432"),
        ("[::]:15432", "[::1]:15432"),
        ("localhost:15432", "[::1]:15432"),
        ("localhost:15432", "127.0.0.1:15432"),
        ("*:15432", "0.0.0.0:15432"),
        ("*:15432", "db-gateway.internal:15432"),
    ] {
        let e = parse_err(&format!("{}{}", local("a", a, ""), local("b", b, "")));
        assert!(
            e.starts_with("tunnels.toml:10: tunnel \"b\": key `local`: ")
                && e.contains(&format!(
                    "{b} overlaps {a}, which is already the local address of tunnel \"a\" (line 1)"
                )),
            "{a} {b}: {e}"
        );
    }
    // The same address spelled otherwise.
    let e = parse_err(&format!(
        "{}{}",
        local("a", "[::1]:5", ""),
        local("b", "[0:0::1]:5", "")
    ));
    assert!(
        e.contains("[0:0::1]:5 is the same address as [::1]:5"),
        "{e}"
    );
    // What can listen side by side: other ports, other addresses, IPv6-only next to IPv4,
    // port 0, a name next to a single-family wildcard, and families kept apart by
    // AddressFamily.
    for (a, b, extra) in [
        ("127.0.0.1:15432", "127.0.0.1:15433", ""),
        ("127.0.0.1:15432", "127.0.0.2:15432", ""),
        ("0.0.0.0:15432", "[::]:15432", ""),
        ("0.0.0.0:15432", "[::1]:15432", ""),
        ("[::]:15432", "127.0.0.1:15432", ""),
        ("127.0.0.1:0", "0.0.0.0:0", ""),
        ("0.0.0.0:15432", "db-gateway.internal:15432", ""),
        (
            "[::1]:15432",
            "localhost:15432",
            "options = { AddressFamily = \"inet\" }",
        ),
    ] {
        let text = format!("{}{}", local("a", a, ""), local("b", b, extra));
        assert_eq!(parse_ok(&text).tunnels.len(), 2, "{text}");
    }
}

#[test]
fn a_tunnel_on_the_admin_endpoints_port_is_refused() {
    for (admin, l) in [
        ("127.0.0.1:9180", "127.0.0.1:9180"),
        ("0.0.0.0:9180", "127.0.0.1:9180"),
        ("127.0.0.1:9180", "localhost:9180"),
        ("127.0.0.1:9180", "*:9180"),
        ("[::1]:9180", "[::]:9180"),
    ] {
        let e = parse_err(&format!(
            "[admin]\nlisten = \"{admin}\"\n{}",
            local("a", l, "")
        ));
        assert!(
            e.starts_with("tunnels.toml:6: tunnel \"a\": key `local`: ")
                && e.contains(&format!(
                    "{l} overlaps {admin}, the admin endpoint's address"
                )),
            "{admin} {l}: {e}"
        );
    }
    for (admin, l) in [
        ("127.0.0.1:9180", "127.0.0.1:9181"),
        ("127.0.0.1:9180", "127.0.0.2:9180"),
        ("[::1]:9180", "127.0.0.1:9180"),
        ("127.0.0.1:0", "127.0.0.1:0"),
    ] {
        let text = format!("[admin]\nlisten = \"{admin}\"\n{}", local("a", l, ""));
        assert_eq!(parse_ok(&text).tunnels.len(), 1, "{text}");
    }
}

#[test]
fn probes_that_would_get_the_bastion_blocked_by_mysql_are_warned_about() {
    let c = parse_ok(
        "[[tunnel]]\nname = \"default-3306\"\nbastion = \"b\"\nlocal = \"127.0.0.1:1\"\nremote = \"db:3306\"\n\
         [[tunnel]]\nname = \"tcp-3306\"\nbastion = \"b\"\nlocal = \"127.0.0.1:2\"\nremote = \"db:3306\"\nprobe = \"tcp\"\n\
         [[tunnel]]\nname = \"pg-3306\"\nbastion = \"b\"\nlocal = \"127.0.0.1:3\"\nremote = \"db:3306\"\nprobe = \"postgres\"\n\
         [[tunnel]]\nname = \"mysql-anonymous\"\nbastion = \"b\"\nlocal = \"127.0.0.1:4\"\nremote = \"db:13306\"\nprobe = \"mysql\"\n\
         [[tunnel]]\nname = \"mysql-login\"\nbastion = \"b\"\nlocal = \"127.0.0.1:5\"\nremote = \"db:3306\"\nprobe = \"mysql\"\n\
         probe_user = \"probe\"\nprobe_password_file = \"/etc/forwarder/probe\"\n\
         [[tunnel]]\nname = \"none-3306\"\nbastion = \"b\"\nlocal = \"127.0.0.1:6\"\nremote = \"db:3306\"\nprobe = \"none\"\n\
         [[tunnel]]\nname = \"tcp-5432\"\nbastion = \"b\"\nlocal = \"127.0.0.1:7\"\nremote = \"db:5432\"\n\
         [[tunnel]]\nname = \"remote-3306\"\nkind = \"remote\"\nbastion = \"b\"\nbastion_listen = \"8022\"\ntarget = \"127.0.0.1:3306\"\n",
    );
    let warned: Vec<&str> = c
        .tunnels
        .iter()
        .filter(|t| probe_hazard(t).is_some())
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(
        warned,
        ["default-3306", "tcp-3306", "pg-3306", "mysql-anonymous"]
    );
    for t in &c.tunnels {
        let Some(w) = probe_hazard(t) else { continue };
        assert!(w.starts_with(&format!("tunnel {:?}: ", t.name)), "{w}");
        assert!(w.contains("max_connect_errors"), "{w}");
        assert!(
            w.contains("probe_user") && w.contains("probe_password_file"),
            "{w}"
        );
        assert!(w.contains("probe = \"none\""), "{w}");
    }
    let w = probe_hazard(&c.tunnels[0]).unwrap_or_default();
    assert!(
        w.contains("probe \"tcp\"") && w.contains("the default"),
        "{w}"
    );
}

#[test]
fn revoked_host_keys_in_options_reach_the_session_and_decide_it() {
    let c = parse_ok(
        r#"
[defaults]
options = { RevokedHostKeys = "~/revoked.krl /etc/forwarder/revoked_keys" }

[[tunnel]]
name = "a"
bastion = "b"
local = "127.0.0.1:1"
remote = "r:1"

[[tunnel]]
name = "b"
bastion = "b"
local = "127.0.0.1:2"
remote = "r:2"
options = { RevokedHostKeys = "none" }
"#,
    );
    assert_eq!(
        c.tunnels[0].config.session.options.revoked_host_keys,
        [
            PathBuf::from("/home/tester/revoked.krl"),
            PathBuf::from("/etc/forwarder/revoked_keys")
        ]
    );
    assert!(
        c.tunnels[1]
            .config
            .session
            .options
            .revoked_host_keys
            .is_empty()
    );
    assert_ne!(
        c.tunnels[0].session_args, c.tunnels[1].session_args,
        "tunnels with other revocation lists do not share a session"
    );
}

#[test]
fn unix_socket_locals_and_remotes() {
    let tunnel = |name: &str, local: &str, remote: &str| {
        format!(
            "[[tunnel]]\nname = \"{name}\"\nbastion = \"u@b\"\nlocal = \"{local}\"\nremote = \"{remote}\"\n"
        )
    };
    let pg = "/var/run/postgresql/.s.PGSQL.5432";
    let c = parse_ok(&format!(
        "{}{}{}",
        tunnel("a", "/run/forwarder/a.sock", "db:5432"),
        tunnel("b", "127.0.0.1:15432", pg),
        tunnel("c", "/run/forwarder/c:x.sock", pg),
    ));
    let [a, b, cc] = &c.tunnels[..] else {
        panic!("three tunnels: {c:?}");
    };
    assert_eq!(
        a.config.forwards[0].listen,
        cli::Listen::Path(PathBuf::from("/run/forwarder/a.sock"))
    );
    assert_eq!(a.remote.to_string(), "db:5432");
    assert_eq!(a.probe, ProbeKind::Tcp);
    assert_eq!(b.config.forwards[0].port(), Some(15432));
    assert_eq!(b.remote, Destination::Unix(pg.to_owned()));
    assert_eq!(b.config.forwards[0].to, Destination::Unix(pg.to_owned()));
    // A ':' in a path is taken as part of it.
    assert_eq!(
        cc.config.forwards[0].listen,
        cli::Listen::Path(PathBuf::from("/run/forwarder/c:x.sock"))
    );

    // The same socket twice, written differently.
    let e = parse_err(&format!(
        "{}{}",
        tunnel("a", "/run/f/a.sock", "db:1"),
        tunnel("b", "/run//f/a.sock", "db:2")
    ));
    assert!(
        e.contains("already the local address of tunnel \"a\""),
        "{e}"
    );
    // A socket and a port never clash.
    parse_ok(&format!(
        "{}{}",
        tunnel("a", "/run/f/a.sock", "db:1"),
        tunnel("b", "127.0.0.1:1", "db:2")
    ));

    for (local, remote, needle) in [
        (
            "run/a.sock",
            "db:1",
            "key `local`: \"run/a.sock\" is not an absolute Unix socket path",
        ),
        ("/run/a]b.sock", "db:1", "without ']'"),
        (
            "127.0.0.1:1",
            "run/pg/.s.PGSQL.1",
            "key `remote`: \"run/pg/.s.PGSQL.1\" is not an absolute",
        ),
        (
            "127.0.0.1:1",
            "db",
            "or the absolute path of a Unix socket on the bastion",
        ),
    ] {
        let e = parse_err(&tunnel("a", local, remote));
        assert!(e.contains(needle), "{local} {remote}: {e}");
    }
    let remote = |target: &str| {
        format!(
            "[[tunnel]]\nname = \"r\"\nkind = \"remote\"\nbastion = \"u@b\"\nbastion_listen = \"8022\"\ntarget = \"{target}\"\n"
        )
    };
    let c = parse_ok(&remote("/run/app.sock"));
    let TunnelKind::Remote(spec) = &c.tunnels[0].kind else {
        panic!("a remote tunnel: {c:?}");
    };
    assert_eq!(spec.target, Destination::Unix("/run/app.sock".into()));
    assert_eq!(c.tunnels[0].remote, spec.target);
    let e = parse_err(&remote("run/app.sock"));
    assert!(
        e.contains("key `target`: \"run/app.sock\" is not an absolute"),
        "{e}"
    );
}

/// A socks tunnel on `local`, named `name`, through bastion `b`.
fn socks(name: &str, local: &str, extra: &str) -> String {
    format!(
        "[[tunnel]]\nname = \"{name}\"\nkind = \"socks\"\nbastion = \"u@b\"\nlocal = \"{local}\"\n{extra}\n"
    )
}

// `kind = "socks"` is `-D local`: a SOCKS proxy whose connections name their own targets, on
// the same session as the bastion's other tunnels, never probed.
#[test]
fn socks_tunnels_are_dash_d_on_a_local_address_or_socket_and_are_not_probed() {
    let c = parse_ok(&format!(
        "[defaults]\nprobe = \"postgres\"\n{}{}{}{}",
        socks("s", "127.0.0.1:1080", ""),
        socks("s6", "[::1]:1081", ""),
        socks("sp", "/run/fwd/socks.sock", ""),
        local("l", "127.0.0.1:15432", ""),
    ));
    let [s, s6, sp, l] = &c.tunnels[..] else {
        panic!("{:?}", c.tunnels)
    };
    for t in [s, s6, sp] {
        assert_eq!(t.kind, TunnelKind::Local, "{}", t.name);
        assert_eq!(t.remote, Destination::Socks, "{}", t.name);
        assert_eq!(
            t.probe,
            ProbeKind::None,
            "{}: [defaults] probe is not for it",
            t.name
        );
        let [f] = &t.config.forwards[..] else {
            panic!("{:?}", t.config.forwards)
        };
        assert_eq!(f.to, Destination::Socks, "{}", t.name);
        assert_eq!(t.session_args, l.session_args, "one session with the -L");
    }
    let listen = |t: &TunnelEntry| t.config.forwards[0].listen.clone();
    assert_eq!(
        listen(s),
        cli::Listen::Port {
            bind_address: Some("127.0.0.1".into()),
            port: 1080
        }
    );
    assert_eq!(
        listen(s6),
        cli::Listen::Port {
            bind_address: Some("::1".into()),
            port: 1081
        }
    );
    assert_eq!(listen(sp), cli::Listen::Path("/run/fwd/socks.sock".into()));
    assert_eq!(s.local, "127.0.0.1:1080");
    assert_eq!(l.probe, ProbeKind::Postgres);
    assert!(config_probe_hazards(&c).is_empty());
}

fn config_probe_hazards(c: &FleetConfig) -> Vec<String> {
    c.tunnels.iter().filter_map(probe_hazard).collect()
}

#[test]
fn socks_tunnels_refuse_targets_probes_and_bad_addresses_with_their_line() {
    let e = parse_err(&socks("s", "127.0.0.1:1080", "remote = \"db:5432\""));
    assert!(
        e.starts_with("tunnels.toml:6:")
            && e.contains(
                "key `remote` is not for a socks tunnel (a socks tunnel has only `local`)"
            ),
        "{e}"
    );
    let e = parse_err(&socks("s", "127.0.0.1:1080", "target = \"db:5432\""));
    assert!(e.contains("key `target` is not for a socks tunnel"), "{e}");
    let e = parse_err(&socks("s", "127.0.0.1:1080", "bastion_listen = \"8022\""));
    assert!(
        e.contains("key `bastion_listen` is not for a socks tunnel"),
        "{e}"
    );
    let e = parse_err(&socks("s", "127.0.0.1:1080", "probe = \"tcp\""));
    assert!(
        e.starts_with("tunnels.toml:6:")
            && e.contains(
                "key `probe`: a socks tunnel is not probed (each connection names its own target)"
            ),
        "{e}"
    );
    let e = parse_err("[[tunnel]]\nname = \"s\"\nkind = \"socks\"\nbastion = \"u@b\"\n");
    assert!(e.contains("key `local` is missing"), "{e}");
    for bad in ["1080", "nowhere", "relative/socks.sock", "127.0.0.1:99999"] {
        let e = parse_err(&socks("s", bad, ""));
        assert!(
            e.starts_with("tunnels.toml:5:") && e.contains("key `local`"),
            "{bad}: {e}"
        );
    }
    let e = parse_err("[[tunnel]]\nname = \"t\"\nbastion = \"b\"\nkind = \"sideways\"\n");
    assert!(
        e.contains(r#"key `kind`: "sideways" is not "local", "remote" or "socks""#),
        "{e}"
    );
}

#[test]
fn a_socks_tunnel_and_a_local_one_cannot_take_the_same_port() {
    let e = parse_err(&format!(
        "{}{}",
        local("l", "127.0.0.1:1080", ""),
        socks("s", "0.0.0.0:1080", "")
    ));
    assert!(
        e.contains("tunnel \"s\": key `local`: 0.0.0.0:1080 overlaps 127.0.0.1:1080"),
        "{e}"
    );
    let e = parse_err(&format!(
        "{}{}",
        socks("a", "/run/fwd/s.sock", ""),
        socks("b", "/run/fwd//s.sock", "")
    ));
    assert!(e.contains("tunnel \"b\": key `local`"), "{e}");
}

// Socket paths are expanded as `-L` and `-R` expand them, and the tunnel's record of them
// (what it probes, shows and compares) is the expanded path it forwards to and listens on.
#[test]
fn socket_paths_are_expanded_once_and_recorded_expanded() {
    let c = parse_ok(
        "[defaults]\nbastion = \"ops@b.example\"\n\n[[tunnel]]\nname = \"l\"\n\
         local = \"/run/fwd/%u.sock\"\nremote = \"/run/mysqld/mysql%d.sock\"\n\n\
         [[tunnel]]\nname = \"r\"\nkind = \"remote\"\nbastion_listen = \"/run/app/%u.sock\"\n\
         target = \"/srv%d/app.sock\"\n",
    );
    let l = &c.tunnels[0];
    assert_eq!(
        l.remote,
        Destination::Unix("/run/mysqld/mysql/home/tester.sock".into())
    );
    assert_eq!(l.config.forwards[0].to, l.remote);
    assert_eq!(l.local, "/run/fwd/tester.sock");
    assert_eq!(
        l.config.forwards[0].listen,
        cli::Listen::Path("/run/fwd/tester.sock".into())
    );
    let r = &c.tunnels[1];
    let TunnelKind::Remote(spec) = &r.kind else {
        panic!("a remote tunnel: {r:?}");
    };
    assert_eq!(
        r.remote,
        Destination::Unix("/srv/home/tester/app.sock".into())
    );
    assert_eq!(spec.target, r.remote);
    assert_eq!(spec.listen, ForwardListen::unix("/run/app/tester.sock"));
    assert_eq!(r.local, "/run/app/tester.sock");
    // `%%` is a literal percent sign; an unknown token is refused with its key.
    let c = parse_ok(
        "[[tunnel]]\nname = \"p\"\nbastion = \"b\"\nlocal = \"/run/a%%b.sock\"\n\
         remote = \"db:5432\"\n",
    );
    assert_eq!(c.tunnels[0].local, "/run/a%b.sock");
    let e = parse_err(
        "[[tunnel]]\nname = \"p\"\nbastion = \"b\"\nlocal = \"127.0.0.1:1\"\n\
         remote = \"/run/%z.sock\"\n",
    );
    assert!(e.contains("%z"), "{e}");
}

// Two tunnels whose paths differ as written but are one path once expanded clash.
#[test]
fn expanded_socket_paths_clash() {
    let e = parse_err(
        "[defaults]\nbastion = \"b\"\n\n[[tunnel]]\nname = \"a\"\nlocal = \"/run/tester.sock\"\n\
         remote = \"db:5432\"\n\n[[tunnel]]\nname = \"b\"\nlocal = \"/run/%u.sock\"\n\
         remote = \"db:5433\"\n",
    );
    assert!(
        e.contains("key `local`") && e.contains("/run/tester.sock"),
        "{e}"
    );
}

// A tunnel is one forward: `options` cannot add another.
#[test]
fn options_cannot_add_forwards() {
    for (key, value) in [
        ("RemoteForward", "\"8022 127.0.0.1:22\""),
        ("DynamicForward", "1080"),
        ("LocalForward", "\"1 db:1\""),
    ] {
        let e = parse_err(&format!(
            "[[tunnel]]\nname = \"a\"\nbastion = \"b\"\nlocal = \"127.0.0.1:15432\"\n\
             remote = \"db:5432\"\noptions = {{ {key} = {value} }}\n"
        ));
        assert!(e.contains(&format!("options: `{key}`")), "{e}");
        assert!(e.starts_with("tunnels.toml:6:"), "{e}");
    }
}
