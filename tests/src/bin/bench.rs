//! The whole-system benchmark: two SSH clients (our `forwarder` and OpenSSH's `ssh` by
//! default) side by side, against the same lab sshd with the same cipher and the same
//! `-N -L` options, measured in one run and reported with their ratio. Run by `bench/run`.
//!
//! Figures, each the median of several alternating runs:
//! - bulk throughput through the tunnel, download (server to client) and upload;
//! - the client process's own CPU seconds per GiB moved (from `/proc/<pid>/stat`, so
//!   neither sshd nor the load generator is counted);
//! - the client's peak resident memory after the transfers;
//! - time from process start to the first byte echoed through the tunnel;
//! - pgbench select-only TPS through the tunnel, with persistent connections and with a new
//!   connection (a new channel) per transaction (`pgbench -C`).
//!
//! Where it means something, the same load is also run straight to the server without a
//! tunnel ("direct"), which shows the ceiling this machine puts on both clients. PostgreSQL
//! trusts loopback TCP logins during the benchmark unless `--pg-scram` is given: SCRAM's
//! deliberately slow key derivation would otherwise dominate `pgbench -C` and hide the
//! tunnel's share.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ssh_interop_tests::postgres::pgbench_command;
use ssh_interop_tests::process::{run_bounded, run_ok};
use ssh_interop_tests::{
    ClientKind, EchoServer, KeyKind, Pattern, Postgres, SinkServer, SourceServer, Sshd, Tunnel,
    TunnelBuilder, UserKey, download, echo_one_byte, free_port, upload,
};

const USAGE: &str = "\
usage: bench [options]

  --client-a NAME        first client: forwarder or openssh (default: forwarder)
  --client-b NAME        second client, the yardstick (default: openssh)
  --forwarder PATH       forwarder binary (default: $FORWARDER_BIN, else next to this program)
  --cipher NAME          cipher for both clients (default: aes128-gcm@openssh.com)
  --kex NAME             key exchange for both clients (default: each client's own choice;
                         OpenSSH 9.2 prefers sntrup761x25519-sha512, which is slower)
  --size SIZE            bytes per transfer, with K/M/G suffix (default: 1G)
  --reps N               runs per client for throughput and pgbench (default: 3)
  --ttfb-reps N          runs per client for time to first byte (default: 9)
  --pgbench-seconds N    duration of each pgbench run (default: 10)
  --pgbench-clients N    pgbench concurrent clients (default: 4)
  --key KIND             user key: rsa4096 (default), rsa2048, ed25519, ecdsa256, ...
  --pg-scram             keep scram-sha-256 password logins for pgbench (default: trust)
  --verify               SHA-256 every transfer end to end (costs CPU on the same machine)
  --skip-throughput, --skip-ttfb, --skip-pgbench
  --quick                64M transfers, 1 rep, 3 ttfb reps, 3 s pgbench";

#[derive(Debug)]
struct Args {
    clients: [ClientKind; 2],
    forwarder: Option<PathBuf>,
    cipher: String,
    kex: Option<String>,
    size: u64,
    reps: usize,
    ttfb_reps: usize,
    pgbench_seconds: u32,
    pgbench_clients: u32,
    key: KeyKind,
    verify: bool,
    pg_scram: bool,
    throughput: bool,
    ttfb: bool,
    pgbench: bool,
}

fn parse_args(argv: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        clients: [ClientKind::Forwarder, ClientKind::OpenSsh],
        forwarder: None,
        cipher: "aes128-gcm@openssh.com".to_owned(),
        kex: None,
        size: 1 << 30,
        reps: 3,
        ttfb_reps: 9,
        pgbench_seconds: 10,
        pgbench_clients: 4,
        key: KeyKind::Rsa4096,
        verify: false,
        pg_scram: false,
        throughput: true,
        ttfb: true,
        pgbench: true,
    };
    let mut it = argv.into_iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        let number = |v: String| {
            v.parse::<u32>()
                .map_err(|_| format!("{flag}: not a number: {v:?}"))
        };
        match flag.as_str() {
            "--client-a" | "--client-b" => {
                let v = value()?;
                let kind = ClientKind::parse(&v)
                    .ok_or_else(|| format!("unknown client {v:?}: use forwarder or openssh"))?;
                args.clients[usize::from(flag == "--client-b")] = kind;
            }
            "--forwarder" => args.forwarder = Some(PathBuf::from(value()?)),
            "--cipher" => args.cipher = value()?,
            "--kex" => args.kex = Some(value()?),
            "--size" => args.size = parse_size(&value()?)?,
            "--reps" => args.reps = number(value()?)?.max(1) as usize,
            "--ttfb-reps" => args.ttfb_reps = number(value()?)?.max(1) as usize,
            "--pgbench-seconds" => args.pgbench_seconds = number(value()?)?.max(1),
            "--pgbench-clients" => args.pgbench_clients = number(value()?)?.max(1),
            "--key" => {
                let v = value()?;
                args.key = KeyKind::parse(&v).ok_or_else(|| format!("unknown key kind {v:?}"))?;
            }
            "--verify" => args.verify = true,
            "--pg-scram" => args.pg_scram = true,
            "--skip-throughput" => args.throughput = false,
            "--skip-ttfb" => args.ttfb = false,
            "--skip-pgbench" => args.pgbench = false,
            "--quick" => {
                args.size = 64 << 20;
                args.reps = 1;
                args.ttfb_reps = 3;
                args.pgbench_seconds = 3;
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

/// `123`, `64K`, `512M`, `1G` (also `MiB`, `GiB`, `MB`: all powers of 1024).
fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let number: u64 = number.parse().map_err(|_| format!("bad size {text:?}"))?;
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => return Err(format!("bad size unit in {text:?}: use K, M or G")),
    };
    number
        .checked_mul(1 << shift)
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("bad size {text:?}"))
}

/// One client under test.
struct Contender {
    label: String,
    kind: ClientKind,
    program: Option<PathBuf>,
}

/// Everything the clients connect to.
struct Lab {
    key: UserKey,
    sshd: Sshd,
    echo: EchoServer,
    source: SourceServer,
    sink: SinkServer,
    pg: Option<Postgres>,
}

impl Lab {
    fn tunnel(&self, c: &Contender, args: &Args) -> TunnelBuilder {
        let mut b = TunnelBuilder::new(c.kind, &self.sshd, &self.key).cipher(&args.cipher);
        if let Some(kex) = &args.kex {
            b = b.option(&format!("KexAlgorithms={kex}"));
        }
        if let Some(p) = &c.program {
            b = b.program(p);
        }
        b
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Better {
    Higher,
    Lower,
}

struct Figure {
    name: &'static str,
    better: Better,
    samples: [Vec<f64>; 2],
    /// The same load without a tunnel, where that means something.
    direct: Vec<f64>,
}

impl Figure {
    fn new(name: &'static str, better: Better) -> Figure {
        Figure {
            name,
            better,
            samples: [Vec::new(), Vec::new()],
            direct: Vec::new(),
        }
    }
}

fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("bench: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    run(&args);
    ExitCode::SUCCESS
}

fn run(args: &Args) {
    let same = args.clients[0] == args.clients[1];
    let contenders: Vec<Contender> = args
        .clients
        .iter()
        .enumerate()
        .map(|(i, &kind)| Contender {
            label: if same {
                format!("{}:{}", ["A", "B"][i], kind.name())
            } else {
                kind.name().to_owned()
            },
            kind,
            program: (kind == ClientKind::Forwarder)
                .then(|| args.forwarder.clone())
                .flatten(),
        })
        .collect();

    progress(&format!(
        "lab: generating a {} user key, starting sshd",
        args.key
    ));
    let key = UserKey::generate(args.key);
    // Quiet logging: sshd's own log writes would otherwise be part of what is measured.
    let sshd = Sshd::builder()
        .authorize(&key)
        .config("LogLevel INFO")
        .start();
    let pg = args.pgbench.then(|| {
        progress("lab: starting PostgreSQL and creating the pgbench tables");
        let pg = Postgres::start();
        pg.pgbench_init(10);
        if !args.pg_scram {
            pg.trust_host_connections();
        }
        pg
    });
    let lab = Lab {
        key,
        sshd,
        echo: EchoServer::start(),
        source: SourceServer::start(args.size),
        sink: if args.verify {
            SinkServer::start()
        } else {
            SinkServer::counting()
        },
        pg,
    };

    let mut figures = Vec::new();
    if args.throughput {
        figures.extend(bench_throughput(&lab, &contenders, args));
    }
    if args.ttfb {
        figures.push(bench_first_byte(&lab, &contenders, args));
    }
    if args.pgbench {
        figures.extend(bench_pgbench(&lab, &contenders, args));
    }
    print_report(args, &contenders, &figures);
}

fn progress(text: &str) {
    eprintln!("bench: {text}");
}

/// The order of the two clients in round `round`: alternating, so neither always runs on a
/// machine the other one just warmed up (or heated).
fn order(round: usize) -> [usize; 2] {
    if round.is_multiple_of(2) {
        [0, 1]
    } else {
        [1, 0]
    }
}

fn bench_throughput(lab: &Lab, contenders: &[Contender], args: &Args) -> Vec<Figure> {
    let mut down = Figure::new("download MiB/s", Better::Higher);
    let mut up = Figure::new("upload MiB/s", Better::Higher);
    let mut down_cpu = Figure::new("download client CPU s/GiB", Better::Lower);
    let mut up_cpu = Figure::new("upload client CPU s/GiB", Better::Lower);
    // Everything on the machine (client, sshd, source and sink): on a saturated machine this,
    // not the client's share alone, is what sets the throughput.
    let mut down_sys = Figure::new("download machine CPU s/GiB", Better::Lower);
    let mut up_sys = Figure::new("upload machine CPU s/GiB", Better::Lower);
    let mut down_sshd = Figure::new("download sshd CPU s/GiB", Better::Lower);
    let mut up_sshd = Figure::new("upload sshd CPU s/GiB", Better::Lower);
    let mut rss = Figure::new("client peak RSS MiB", Better::Lower);
    let gib = args.size as f64 / f64::from(1u32 << 30);
    let expected_sha = args.verify.then(|| lab.source.expected_sha256());
    for round in 0..args.reps {
        let d = download(lab.source.port(), args.verify).expect("direct download");
        let u = upload(lab.sink.port(), args.size).expect("direct upload");
        assert_eq!(
            (d.bytes, u.bytes),
            (args.size, args.size),
            "direct transfers are whole"
        );
        progress(&format!(
            "throughput {}/{} {:<12} down {:>8.1} MiB/s  up {:>8.1} MiB/s",
            round + 1,
            args.reps,
            "direct",
            d.mib_per_sec(),
            u.mib_per_sec()
        ));
        down.direct.push(d.mib_per_sec());
        up.direct.push(u.mib_per_sec());
        for i in order(round) {
            let c = &contenders[i];
            let mut tunnel = lab
                .tunnel(c, args)
                .forward_to(lab.source.port())
                .forward_to(lab.sink.port())
                .start();
            let ports = tunnel.local_ports();

            let cpu0 = tunnel.cpu_seconds();
            let sys0 = machine_busy_seconds();
            let sshd0 = sshd_cpu_seconds(&lab.sshd);
            let d = download(ports[0], args.verify)
                .unwrap_or_else(|e| fail(&tunnel, &format!("download: {e}")));
            let cpu1 = tunnel.cpu_seconds();
            let sys1 = machine_busy_seconds();
            let sshd1 = sshd_cpu_seconds(&lab.sshd);
            if d.bytes != args.size || (args.verify && d.sha256 != expected_sha) {
                fail(
                    &tunnel,
                    &format!(
                        "download delivered {} of {} bytes or wrong data",
                        d.bytes, args.size
                    ),
                );
            }
            let u = upload(ports[1], args.size)
                .unwrap_or_else(|e| fail(&tunnel, &format!("upload: {e}")));
            let cpu2 = tunnel.cpu_seconds();
            let sys2 = machine_busy_seconds();
            let sshd2 = sshd_cpu_seconds(&lab.sshd);
            let expected_up = args.verify.then(|| Pattern::get().sha256(args.size));
            if u.bytes != args.size || u.sha256 != expected_up {
                fail(
                    &tunnel,
                    &format!(
                        "upload delivered {} of {} bytes or wrong data",
                        u.bytes, args.size
                    ),
                );
            }
            let peak = tunnel
                .peak_rss_kib()
                .map_or(f64::NAN, |k| k as f64 / 1024.0);
            tunnel.terminate(Duration::from_secs(5));

            progress(&format!(
                "throughput {}/{} {:<12} down {:>8.1} MiB/s ({:.2} CPU s/GiB)  up {:>8.1} MiB/s ({:.2} CPU s/GiB)  peak RSS {:.1} MiB",
                round + 1,
                args.reps,
                c.label,
                d.mib_per_sec(),
                (cpu1 - cpu0) / gib,
                u.mib_per_sec(),
                (cpu2 - cpu1) / gib,
                peak
            ));
            down.samples[i].push(d.mib_per_sec());
            up.samples[i].push(u.mib_per_sec());
            down_cpu.samples[i].push((cpu1 - cpu0) / gib);
            up_cpu.samples[i].push((cpu2 - cpu1) / gib);
            down_sys.samples[i].push((sys1 - sys0) / gib);
            down_sshd.samples[i].push((sshd1 - sshd0) / gib);
            up_sshd.samples[i].push((sshd2 - sshd1) / gib);
            up_sys.samples[i].push((sys2 - sys1) / gib);
            rss.samples[i].push(peak);
        }
    }
    vec![
        down, up, down_cpu, up_cpu, down_sshd, up_sshd, down_sys, up_sys, rss,
    ]
}

fn bench_first_byte(lab: &Lab, contenders: &[Contender], args: &Args) -> Figure {
    let mut figure = Figure::new("start to first echoed byte ms", Better::Lower);
    for round in 0..args.ttfb_reps {
        for i in order(round) {
            let c = &contenders[i];
            let local = free_port();
            let mut tunnel = lab
                .tunnel(c, args)
                .forward(local, "127.0.0.1", lab.echo.port())
                .spawn();
            let deadline = tunnel.started() + Duration::from_secs(30);
            let elapsed = loop {
                if echo_one_byte(local).is_ok() {
                    break tunnel.started().elapsed();
                }
                if tunnel.exited().is_some() || Instant::now() > deadline {
                    fail(&tunnel, "no byte came back through the tunnel");
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            tunnel.terminate(Duration::from_secs(5));
            let ms = elapsed.as_secs_f64() * 1000.0;
            progress(&format!(
                "first byte {}/{} {:<12} {ms:.1} ms",
                round + 1,
                args.ttfb_reps,
                c.label
            ));
            figure.samples[i].push(ms);
        }
    }
    figure
}

fn bench_pgbench(lab: &Lab, contenders: &[Contender], args: &Args) -> Vec<Figure> {
    let Some(pg) = &lab.pg else {
        return Vec::new();
    };
    let mut select = Figure::new("pgbench select-only TPS", Better::Higher);
    let mut connect = Figure::new("pgbench -C select-only TPS", Better::Higher);
    for round in 0..args.reps {
        let tps = pgbench_tps(None, pg.port(), args, false);
        let tps_c = pgbench_tps(None, pg.port(), args, true);
        progress(&format!(
            "pgbench {}/{} {:<12} select-only {tps:.0} TPS, -C {tps_c:.0} TPS",
            round + 1,
            args.reps,
            "direct"
        ));
        select.direct.push(tps);
        connect.direct.push(tps_c);
        for i in order(round) {
            let c = &contenders[i];
            let mut tunnel = lab.tunnel(c, args).forward_to(pg.port()).start();
            let port = tunnel.local_port();
            let tps = pgbench_tps(Some(&tunnel), port, args, false);
            let tps_c = pgbench_tps(Some(&tunnel), port, args, true);
            tunnel.terminate(Duration::from_secs(5));
            progress(&format!(
                "pgbench {}/{} {:<12} select-only {tps:.0} TPS, -C {tps_c:.0} TPS",
                round + 1,
                args.reps,
                c.label
            ));
            select.samples[i].push(tps);
            connect.samples[i].push(tps_c);
        }
    }
    vec![select, connect]
}

/// One pgbench run against `port`: a tunnel's local port, or the server itself when
/// `tunnel` is `None`.
fn pgbench_tps(tunnel: Option<&Tunnel>, port: u16, args: &Args, connect_each: bool) -> f64 {
    let clients = args.pgbench_clients.to_string();
    let mut cmd = pgbench_command(port);
    cmd.args(["-n", "-S", "-T", &args.pgbench_seconds.to_string()])
        .args(["-c", &clients, "-j", &clients]);
    if connect_each {
        cmd.arg("-C");
    }
    cmd.arg("appdb");
    let timeout = Duration::from_secs(u64::from(args.pgbench_seconds) + 120);
    let out = run_bounded(&mut cmd, timeout, "pgbench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let problem = if !out.status.success() {
        format!(
            "pgbench failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
    } else if let Some(tps) = parse_tps(&stdout) {
        return tps;
    } else {
        format!("no tps in pgbench output:\n{stdout}")
    };
    match tunnel {
        Some(tunnel) => fail(tunnel, &problem),
        None => panic!("direct to PostgreSQL: {problem}"),
    }
}

/// The number on pgbench's `tps = N (...)` line.
fn parse_tps(output: &str) -> Option<f64> {
    output
        .lines()
        .find_map(|l| l.trim().strip_prefix("tps = "))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn fail(tunnel: &Tunnel, what: &str) -> ! {
    panic!(
        "{} ({}): {what}\ncommand: {}\nits log ends with:\n{}",
        tunnel.kind(),
        tunnel.pid(),
        tunnel.command_line(),
        ssh_interop_tests::process::file_tail(tunnel.log_path(), 30)
    )
}

fn print_report(args: &Args, contenders: &[Contender], figures: &[Figure]) {
    let ssh_version = {
        let mut cmd = std::process::Command::new(ssh_interop_tests::openssh_binary());
        cmd.arg("-V");
        let out = run_ok(&mut cmd, Duration::from_secs(10), "ssh -V");
        String::from_utf8_lossy(&out.stderr).trim().to_owned()
    };
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, m)| m.trim().to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    println!();
    println!(
        "transfers of {} MiB, {} reps (median), first byte {} reps, pgbench {} s x {} clients",
        args.size >> 20,
        args.reps,
        args.ttfb_reps,
        args.pgbench_seconds,
        args.pgbench_clients
    );
    println!(
        "cipher {}, kex {}, user key {}, {ssh_version}, {cpus} x {cpu_model}",
        args.cipher,
        args.kex.as_deref().unwrap_or("each client's default"),
        args.key
    );
    if args.pgbench {
        let auth = if args.pg_scram {
            "scram-sha-256"
        } else {
            "trust"
        };
        println!("pgbench logins over loopback TCP use {auth} authentication");
    }
    println!();
    let (a, b) = (&contenders[0].label, &contenders[1].label);
    let ratio = format!("{a}/{b}");
    println!(
        "{:<32} {:>14} {:>14} {:>16} {:>10}  note",
        "figure", a, b, ratio, "direct"
    );
    for f in figures {
        let (ma, mb) = (median(&f.samples[0]), median(&f.samples[1]));
        let r = match (ma, mb) {
            (Some(x), Some(y)) if y != 0.0 => format!("{:.2}", x / y),
            _ => "-".to_owned(),
        };
        let note = match f.better {
            Better::Higher => "higher is better",
            Better::Lower => "lower is better",
        };
        println!(
            "{:<32} {:>14} {:>14} {:>16} {:>10}  {note}",
            f.name,
            show(ma),
            show(mb),
            r,
            show(median(&f.direct))
        );
    }
}

fn show(value: Option<f64>) -> String {
    match value {
        None => "-".to_owned(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.3}"),
    }
}

/// CPU seconds the whole machine has spent busy (all CPUs: user, nice, system, irq, softirq),
/// from /proc/stat, in the kernel's clock ticks of 1/100 s.
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return f64::NAN;
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: u64 = [0usize, 1, 2, 5, 6].iter().filter_map(|&i| v.get(i)).sum();
    busy as f64 / 100.0
}

/// CPU seconds used by sshd's session processes (every process below the listener).
fn sshd_cpu_seconds(sshd: &Sshd) -> f64 {
    fn tree(pid: u32) -> f64 {
        ssh_interop_tests::process::cpu_seconds(pid).unwrap_or(0.0)
            + ssh_interop_tests::process::children_of(pid)
                .into_iter()
                .map(tree)
                .sum::<f64>()
    }
    sshd.session_pids().into_iter().map(tree).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1T").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("99999999999G").is_err());
    }

    #[test]
    fn pgbench_tps_line_is_found() {
        let out = "number of failed transactions: 0 (0.000%)\n\
                   latency average = 0.345 ms\n\
                   initial connection time = 12.3 ms\n\
                   tps = 11570.123456 (without initial connection time)\n";
        assert_eq!(parse_tps(out), Some(11570.123456));
        assert_eq!(parse_tps("nothing here"), None);
    }

    #[test]
    fn median_ignores_missing_values() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN]), None);
    }

    #[test]
    fn quick_and_clients_parse() {
        let args = parse_args(
            [
                "--quick",
                "--client-a",
                "openssh",
                "--cipher=chacha20-poly1305@openssh.com",
            ]
            .map(String::from),
        )
        .expect("parses");
        assert_eq!(args.clients, [ClientKind::OpenSsh, ClientKind::OpenSsh]);
        assert_eq!(args.size, 64 << 20);
        assert_eq!(args.cipher, "chacha20-poly1305@openssh.com");
        assert!(parse_args(["--bogus".to_owned()]).is_err());
    }
}
