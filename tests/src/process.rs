//! Running the real tools: bounded commands, children that die with their owner, and the
//! few facts about processes the lab reads from `/proc`.

use std::collections::HashSet;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

/// Whether the tests run as root (CI does; a developer usually does not).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The name of the user running the tests: the user sshd lets in.
pub fn current_user() -> &'static str {
    static USER: OnceLock<String> = OnceLock::new();
    USER.get_or_init(|| {
        let out = run_ok(
            Command::new("id").arg("-un"),
            Duration::from_secs(10),
            "id -un",
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    })
}

/// Finds `name` on `PATH`, then in `extra_dirs` (for tools Debian keeps off `PATH`, such as
/// sshd in `/usr/sbin` for a non-root user or PostgreSQL's versioned bin directory).
pub fn find_program(name: &str, extra_dirs: &[&str]) -> Option<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(extra_dirs.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// Like [`find_program`], but a missing tool is a test failure that says how to get it.
pub fn require_program(name: &str, extra_dirs: &[&str], how_to_install: &str) -> PathBuf {
    find_program(name, extra_dirs).unwrap_or_else(|| {
        panic!("`{name}` not found on PATH or in {extra_dirs:?}; {how_to_install}")
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs a command to completion within `timeout`, capturing its output. A command that does not
/// finish in time is killed and the test fails, so no tool can hang a test. The exit status is
/// left for the caller to judge (see [`run_ok`]).
///
/// Output goes to anonymous files rather than pipes: a daemon that inherits a pipe would
/// otherwise keep the reader waiting long after the command itself exited.
pub fn run_bounded(cmd: &mut Command, timeout: Duration, what: &str) -> Output {
    let mut stdout = tempfile::tempfile().expect("create a temp file for a command's stdout");
    let mut stderr = tempfile::tempfile().expect("create a temp file for a command's stderr");
    cmd.stdin(Stdio::null())
        .stdout(stdout.try_clone().expect("clone a file handle"))
        .stderr(stderr.try_clone().expect("clone a file handle"));
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {what} ({cmd:?}): {e}"));
    let status = wait_bounded(&mut child, timeout).unwrap_or_else(|| {
        kill_tree(child.id());
        let _ = child.wait();
        let err = read_all(&mut stderr);
        panic!(
            "{what} did not finish within {timeout:?} and was killed; its stderr ends with:\n{}",
            tail(&err, 20)
        )
    });
    Output {
        status,
        stdout: read_all(&mut stdout).into_bytes(),
        stderr: read_all(&mut stderr).into_bytes(),
    }
}

/// Runs a command within `timeout` without ever panicking, for clean-up paths that may run
/// while a test is already unwinding (a second panic there would abort the whole process).
/// `None` if it could not start or had to be killed.
pub fn run_quietly(cmd: &mut Command, timeout: Duration) -> Option<ExitStatus> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().ok()?;
    let status = wait_bounded(&mut child, timeout);
    if status.is_none() {
        kill_tree(child.id());
        let _ = wait_bounded(&mut child, Duration::from_secs(5));
    }
    status
}

/// [`run_bounded`], and a non-zero exit fails the test with the tail of the command's output.
pub fn run_ok(cmd: &mut Command, timeout: Duration, what: &str) -> Output {
    let out = run_bounded(cmd, timeout, what);
    if !out.status.success() {
        panic!(
            "{what} failed ({}): {cmd:?}\nstdout ends with:\n{}\nstderr ends with:\n{}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stdout), 20),
            tail(&String::from_utf8_lossy(&out.stderr), 20)
        );
    }
    out
}

fn read_all(file: &mut fs::File) -> String {
    let mut bytes = Vec::new();
    let _ = file.seek(SeekFrom::Start(0));
    let _ = file.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Waits for a child to exit, at most `timeout`; `None` if it is still running.
pub fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Polls `check` until it yields a value, at most `timeout`. On timeout the test fails with
/// `what` and whatever `explain` adds (typically the tail of a server's log).
pub fn wait_until<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
    explain: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("{what}: not done after {timeout:?}\n{}", explain());
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The last `lines` lines of a log file, or a note saying it could not be read.
/// A lab process's log file so far, read lossily; empty if it does not exist yet.
pub fn read_log(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Waits until the log file at `path` contains `needle` and returns the whole log; fails the
/// test with the log's last `tail_lines` lines if it does not appear within `timeout`. `who`
/// names the process in the messages.
pub fn wait_for_log_text(
    path: &Path,
    who: &str,
    needle: &str,
    timeout: Duration,
    tail_lines: usize,
) -> String {
    wait_until(
        timeout,
        &format!("{who} log line containing {needle:?}"),
        || {
            let log = read_log(path);
            log.contains(needle).then_some(log)
        },
        || format!("{who} log ends with:\n{}", file_tail(path, tail_lines)),
    )
}

pub fn file_tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => tail(&String::from_utf8_lossy(&bytes), lines),
        Err(e) => format!("(could not read {}: {e})", path.display()),
    }
}

/// A child process the lab started: killed, with everything it forked, when dropped.
#[derive(Debug)]
pub struct LabChild {
    name: String,
    child: Child,
    done: Option<ExitStatus>,
}

impl LabChild {
    /// Spawns `cmd` with stdin closed; the caller has set up stdout/stderr.
    pub fn spawn(name: &str, cmd: &mut Command) -> LabChild {
        cmd.stdin(Stdio::null());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {name} ({cmd:?}): {e}"));
        LabChild {
            name: name.to_owned(),
            child,
            done: None,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has exited (it is reaped then).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.done.is_none() {
            self.done = self.child.try_wait().ok().flatten();
        }
        self.done
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.done.is_none() {
            self.done = wait_bounded(&mut self.child, timeout);
        }
        self.done
    }

    /// Sends SIGTERM (a polite stop that lets the process log why it exits).
    pub fn terminate(&self) {
        if self.done.is_none() {
            signal(self.pid(), Signal::TERM);
        }
    }

    /// Kills the process and everything it forked, then reaps it.
    pub fn kill(&mut self) {
        if self.done.is_none() {
            kill_tree(self.pid());
            self.done = wait_bounded(&mut self.child, Duration::from_secs(10));
            if self.done.is_none() {
                eprintln!("lab: {} (pid {}) survived SIGKILL", self.name, self.pid());
            }
        }
    }
}

impl Drop for LabChild {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `sig` to `pid`, ignoring a process that is already gone.
pub fn signal(pid: u32, sig: Signal) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// The processes whose command line has an argument containing `needle`.
pub fn processes_with(needle: &str) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    c.split(|&b| b == 0)
                        .any(|a| String::from_utf8_lossy(a).contains(needle))
                })
                .unwrap_or(false)
        })
        .collect()
}

/// The session id of `pid` (proc(5) stat field 6).
pub fn session_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(3)?.parse().ok()
}

/// Stops the background processes whose command line holds `needle`, and waits (bounded)
/// until they are gone, failing after `within`.
pub fn stop_background(needle: &str, within: Duration) {
    for pid in processes_with(needle) {
        signal(pid, Signal::TERM);
    }
    let deadline = Instant::now() + within;
    while !processes_with(needle).is_empty() {
        assert!(Instant::now() < deadline, "background processes remain");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGKILLs `pid` and all its descendants. The tree is collected first and the root killed
/// first, so a server cannot fork a new child in between (sshd forks one per connection and
/// those escape into their own sessions, so a process-group kill would miss them).
pub fn kill_tree(pid: u32) {
    for victim in tree(pid) {
        signal(victim, Signal::KILL);
    }
}

/// `pid` and its descendants, from `/proc`, parents before their children.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    let mut seen: HashSet<u32> = pids.iter().copied().collect();
    let mut i = 0;
    while let Some(&parent) = pids.get(i) {
        for child in children_of(parent) {
            if seen.insert(child) {
                pids.push(child);
            }
        }
        i += 1;
    }
    pids
}

/// Processes stopped with SIGSTOP, continued (SIGCONT) when dropped, so a failing test
/// leaves no frozen process behind. Freezing an sshd session makes the server stop
/// answering on a connection that stays open, as a hung host or a dead network path would.
#[derive(Debug)]
pub struct Frozen(Vec<u32>);

impl Frozen {
    /// Stops `root` and everything it forked (sshd's monitor and its unprivileged child both
    /// take part in a session).
    pub fn tree(root: u32) -> Frozen {
        Frozen::trees(&[root])
    }

    /// Stops each of `roots` and everything they forked.
    pub fn trees(roots: &[u32]) -> Frozen {
        let mut pids = roots.to_vec();
        let mut seen: HashSet<u32> = pids.iter().copied().collect();
        let mut i = 0;
        while let Some(&pid) = pids.get(i) {
            for child in children_of(pid) {
                if seen.insert(child) {
                    pids.push(child);
                }
            }
            i += 1;
        }
        for &pid in &pids {
            signal(pid, Signal::STOP);
        }
        Frozen(pids)
    }

    /// The stopped processes.
    pub fn pids(&self) -> &[u32] {
        &self.0
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for &pid in &self.0 {
            signal(pid, Signal::CONT);
        }
    }
}

/// The direct children of `pid`, from `/proc`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| ProcStat::read(p).is_some_and(|s| s.ppid == pid))
        .collect()
}

/// The fields of `/proc/<pid>/stat` the lab uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// Parent process id.
    pub ppid: u32,
    /// User-mode CPU time of the process (all threads, not children), in clock ticks.
    pub utime_ticks: u64,
    /// Kernel-mode CPU time, in clock ticks.
    pub stime_ticks: u64,
}

impl ProcStat {
    /// Reads the stat line of `pid`; `None` if the process is gone.
    pub fn read(pid: u32) -> Option<ProcStat> {
        Self::read_path(&format!("/proc/{pid}/stat"))
    }

    /// Reads a stat file by path (`/proc/thread-self/stat` for the calling thread).
    pub fn read_path(path: &str) -> Option<ProcStat> {
        Self::parse(&fs::read_to_string(path).ok()?)
    }

    /// Parses a stat line. The command name sits in parentheses and may itself hold spaces
    /// and parentheses, so fields are counted from the last `)`.
    pub fn parse(line: &str) -> Option<ProcStat> {
        let rest = &line[line.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After the name: state(3) ppid(4) ... utime(14) stime(15), numbered as in proc(5).
        Some(ProcStat {
            ppid: fields.get(1)?.parse().ok()?,
            utime_ticks: fields.get(11)?.parse().ok()?,
            stime_ticks: fields.get(12)?.parse().ok()?,
        })
    }

    /// User plus system CPU seconds.
    pub fn cpu_seconds(&self) -> f64 {
        (self.utime_ticks + self.stime_ticks) as f64
            / rustix::param::clock_ticks_per_second() as f64
    }

    /// User-mode CPU seconds alone (the rest of [`ProcStat::cpu_seconds`] is the kernel's).
    pub fn user_seconds(&self) -> f64 {
        self.utime_ticks as f64 / rustix::param::clock_ticks_per_second() as f64
    }
}

/// CPU seconds (user + system, all threads) used so far by the live process `pid`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    ProcStat::read(pid).map(|s| s.cpu_seconds())
}

/// Peak resident memory of the live process `pid` in KiB (`VmHWM`).
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_field_kib(pid, "VmHWM:")
}

/// Current resident memory of the live process `pid` in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_field_kib(pid, "VmRSS:")
}

/// The live process `pid`'s proportional share of resident memory in KiB (`Pss` of
/// `/proc/PID/smaps_rollup`): each page it shares with other processes, such as a library's
/// code, counts divided by how many map it, so the sum over many processes is what they hold
/// together.
pub fn pss_kib(pid: u32) -> Option<u64> {
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn status_field_kib(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_line_with_awkward_command_name_parses() {
        let line = "4242 (a (b) c) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1 0 1 1 1";
        let stat = ProcStat::parse(line).expect("parses");
        assert_eq!(stat.ppid, 17);
        assert_eq!(stat.utime_ticks, 250);
        assert_eq!(stat.stime_ticks, 75);
    }

    #[test]
    fn own_stat_is_readable() {
        let stat = ProcStat::read(std::process::id()).expect("own /proc entry");
        assert_eq!(stat.ppid, std::os::unix::process::parent_id());
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }

    #[test]
    fn bounded_run_kills_a_hanging_command() {
        let result = std::panic::catch_unwind(|| {
            run_bounded(
                Command::new("sleep").arg("30"),
                Duration::from_millis(200),
                "sleep",
            )
        });
        let message = *result
            .expect_err("must time out")
            .downcast::<String>()
            .expect("string panic");
        assert!(message.contains("did not finish"), "{message}");
    }

    #[test]
    fn kill_tree_reaches_grandchildren() {
        let mut child = LabChild::spawn(
            "sh",
            Command::new("sh").args(["-c", "sleep 60 & sleep 60 & wait"]),
        );
        let children = wait_until(
            Duration::from_secs(5),
            "sh forks its sleeps",
            || {
                let c = children_of(child.pid());
                (c.len() == 2).then_some(c)
            },
            String::new,
        );
        child.kill();
        assert!(child.exited().is_some());
        wait_until(
            Duration::from_secs(5),
            "the sleeps are gone",
            || children.iter().all(|&p| !alive(p)).then_some(()),
            String::new,
        );
    }

    fn alive(pid: u32) -> bool {
        // A killed grandchild is reparented and reaped by init; until then it is a zombie.
        fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
    }
}
