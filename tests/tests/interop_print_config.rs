//! `-G` beside OpenSSH's `ssh -G`: one ssh_config file (Host blocks with patterns and
//! negations, `Match`, first values winning, the command line over the file) read by both,
//! for several destinations; every setting forwarder prints in ssh's form must read the same
//! in both. This checks how forwarder resolves ssh_config against ssh itself, with no server.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ssh_interop_tests::client::{forwarder_binary, openssh_binary};
use ssh_interop_tests::process::run_bounded;

/// The settings forwarder prints as ssh does; the rest (defaults that differ by design,
/// paths ssh leaves unexpanded, forwarder's own keywords) are not compared.
const COMPARED: &[&str] = &[
    "user",
    "hostname",
    "port",
    "addressfamily",
    "batchmode",
    "compression",
    "exitonforwardfailure",
    "gatewayports",
    "hashknownhosts",
    "identitiesonly",
    "kbdinteractiveauthentication",
    "passwordauthentication",
    "pubkeyauthentication",
    "forkafterauthentication",
    "streamlocalbindunlink",
    "tcpkeepalive",
    "connectionattempts",
    "numberofpasswordprompts",
    "serveralivecountmax",
    "serveraliveinterval",
    "loglevel",
    "bindaddress",
    "bindinterface",
    "controlmaster",
    "controlpath",
    "controlpersist",
    "hostkeyalias",
    "identityagent",
    "preferredauthentications",
    "revokedhostkeys",
    "knownhostscommand",
    "localforward",
    "remoteforward",
    "dynamicforward",
    "certificatefile",
    "globalknownhostsfile",
    "userknownhostsfile",
    "permitremoteopen",
    "connecttimeout",
    "rekeylimit",
    "streamlocalbindmask",
];

/// Settings whose defaults differ by design (forwarder's algorithm lists; its
/// StrictHostKeyChecking `yes`, where ssh asks; its two default key files), compared where
/// the case sets them.
const DEFAULTS_DIFFER: &[&str] = &[
    "ciphers",
    "macs",
    "kexalgorithms",
    "hostkeyalgorithms",
    "stricthostkeychecking",
    "identityfile",
];

const CONFIG: &str = "\
Host db-*.prod !db-legacy.prod
    User analytics
    Port 2222
    HostName %h.internal.example
    IdentityFile /keys/prod_ed25519
    CertificateFile /keys/prod_ed25519-cert.pub
    LocalForward 15432 db.internal:5432
    LocalForward 127.0.0.1:13306 [fd00::7]:3306
    StrictHostKeyChecking accept-new
    ServerAliveInterval 20
    ServerAliveCountMax 5
    Ciphers aes256-gcm@openssh.com,aes128-gcm@openssh.com
    KexAlgorithms curve25519-sha256
    ConnectTimeout 7
    RekeyLimit 1G 1h
    ControlPersist 10m

Host db-legacy.prod
    User legacy
    HostKeyAlgorithms rsa-sha2-512,rsa-sha2-256
    MACs hmac-sha2-256-etm@openssh.com
    PubkeyAuthentication no
    PreferredAuthentications password
    NumberOfPasswordPrompts 1

Match host *.prod user analytics
    Compression yes
    HostKeyAlias prod-bastion
    UserKnownHostsFile /keys/known_hosts_prod
    GlobalKnownHostsFile none

Host *
    User fallback
    Port 22
    ServerAliveInterval 30
    BatchMode yes
    ExitOnForwardFailure yes
    TCPKeepAlive no
    AddressFamily inet
    GatewayPorts no
    IdentitiesOnly yes
    IdentityAgent none
    HashKnownHosts yes
    ConnectionAttempts 3
    StreamLocalBindMask 0077
    StreamLocalBindUnlink yes
    PermitRemoteOpen db:5432 *:3306
    RevokedHostKeys /keys/revoked.krl
    KnownHostsCommand /usr/local/bin/hostkeys %H %I
    DynamicForward 1080
    RemoteForward 8022 localhost:22
    BindAddress 127.0.0.1
    BindInterface lo
    ControlMaster auto
    ControlPath /tmp/cm-%C
    ControlPersist yes
    LogLevel VERBOSE
    KbdInteractiveAuthentication no
    PasswordAuthentication no
    ForkAfterAuthentication no
    UserKnownHostsFile /keys/known_hosts
    GlobalKnownHostsFile /keys/ssh_known_hosts
";

/// `program -G -F config args...`, parsed into keyword -> values (repeated keywords keep
/// every value, in order).
fn settings(program: &Path, config: &Path, args: &[&str]) -> BTreeMap<String, Vec<String>> {
    let mut cmd = Command::new(program);
    cmd.arg("-G").arg("-F").arg(config).args(args);
    let out = run_bounded(&mut cmd, Duration::from_secs(30), "-G");
    assert!(
        out.status.success(),
        "{} -G {args:?}: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        map.entry(key.to_owned())
            .or_default()
            .push(value.to_owned());
    }
    map
}

#[test]
fn forwarder_g_reads_an_ssh_config_as_ssh_g_does() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("config");
    fs::write(&config, CONFIG).expect("write the config");
    {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    // Each destination's arguments, and which of DEFAULTS_DIFFER the file or command line set.
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["db-orders.prod"],
            &[
                "ciphers",
                "kexalgorithms",
                "stricthostkeychecking",
                "identityfile",
            ],
        ),
        (&["db-legacy.prod"], &["hostkeyalgorithms", "macs"]),
        (&["other.example"], &[]),
        // The command line wins over the file, as in ssh.
        (
            &[
                "-p",
                "2200",
                "-l",
                "ops",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "ServerAliveInterval=9",
                "-L",
                "16000:cache:6379",
                "db-orders.prod",
            ],
            &[
                "ciphers",
                "kexalgorithms",
                "stricthostkeychecking",
                "identityfile",
            ],
        ),
        (
            &[
                "-o",
                "Ciphers=aes128-gcm@openssh.com",
                "-C",
                "alice@db-1.prod",
            ],
            &[
                "ciphers",
                "kexalgorithms",
                "stricthostkeychecking",
                "identityfile",
            ],
        ),
    ];
    let mut compared = 0;
    for (args, lists) in cases {
        let ssh = settings(&openssh_binary(), &config, args);
        let ours = settings(&forwarder_binary(), &config, args);
        assert!(lists.iter().all(|l| DEFAULTS_DIFFER.contains(l)));
        for key in COMPARED.iter().chain(lists.iter()) {
            let (theirs, mine) = (ssh.get(*key), ours.get(*key));
            assert_eq!(
                mine, theirs,
                "{key} for {args:?}: forwarder {mine:?}, ssh {theirs:?}"
            );
            compared += usize::from(theirs.is_some());
        }
    }
    // Most settings were there to compare, not missing from both.
    assert!(compared > 30 * cases.len(), "{compared}");
}
