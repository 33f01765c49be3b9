//! `forwarder check --json` against a lab sshd, for the tests of what it reports.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::process::run_bounded;
use crate::{Sshd, UserKey, forwarder_binary};

/// How long one check may take.
const CHECK_LIMIT: Duration = Duration::from_secs(90);

/// `forwarder check --json` of a tunnel to `sshd` as its user with `key`, trusting
/// `known_hosts` (no global file, no agent, batch mode), with `options` as `-o` settings and
/// one forward to 127.0.0.1:9: the report of stage `stage`. Panics, with the output, when
/// the report does not parse or has no such stage.
pub fn check_stage(
    sshd: &Sshd,
    key: &UserKey,
    known_hosts: &Path,
    options: &[String],
    stage: u64,
) -> Value {
    let cache = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new(forwarder_binary());
    cmd.arg("check")
        .arg("--json")
        .arg("-p")
        .arg(sshd.port().to_string())
        .arg("-i")
        .arg(key.private_key_path())
        .args(["-o", "GlobalKnownHostsFile=none", "-o", "BatchMode=yes"])
        .args(["-o", "IdentityAgent=none"]);
    for option in options {
        cmd.arg("-o").arg(option);
    }
    cmd.arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args(["-L", "0:127.0.0.1:9"])
        .arg(format!("{}@127.0.0.1", sshd.user()))
        .env("XDG_CACHE_HOME", cache.path());
    let out = run_bounded(&mut cmd, CHECK_LIMIT, "forwarder check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let doc: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "--json output does not parse ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    doc["stages"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["stage"] == stage))
        .cloned()
        .unwrap_or_else(|| panic!("no stage {stage} in {doc:#}"))
}
