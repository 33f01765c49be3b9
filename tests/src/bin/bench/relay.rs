//! A plain TCP relay in the middle of the direct transfers: one process (here, two threads)
//! reading one loopback socket and writing another, 256 KiB at a time, with no encryption and
//! no framing. Its CPU per GiB is what the kernel alone charges any process that relays the
//! bytes, tunnel client or not, so it is the floor under both clients' CPU figures.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ssh_interop_tests::process::ProcStat;

/// The longest the relay waits for its one connection, and for any read.
const WAIT: Duration = Duration::from_secs(60);
/// What one read asks for (the forwarder's largest read from the bastion).
const CHUNK: usize = 256 * 1024;

/// CPU seconds a relay spent: user and kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct RelayCpu {
    pub(crate) user: f64,
    pub(crate) system: f64,
}

impl RelayCpu {
    pub(crate) fn total(&self) -> f64 {
        self.user + self.system
    }
}

/// Relays one connection to 127.0.0.1:`target`.
pub(crate) struct Relay {
    port: u16,
    done: JoinHandle<io::Result<RelayCpu>>,
}

impl Relay {
    pub(crate) fn start(target: u16) -> io::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let done = thread::spawn(move || {
            let client = accept_within(&listener, WAIT)?;
            let server = TcpStream::connect(("127.0.0.1", target))?;
            for s in [&client, &server] {
                s.set_read_timeout(Some(WAIT))?;
                s.set_nodelay(true)?;
            }
            let (to_server, from_client) = (server.try_clone()?, client.try_clone()?);
            let up = thread::spawn(move || copy_counting_cpu(from_client, to_server));
            let down = copy_counting_cpu(server, client)?;
            let up = up
                .join()
                .map_err(|_| io::Error::other("the relay's other thread panicked"))??;
            Ok(RelayCpu {
                user: down.user + up.user,
                system: down.system + up.system,
            })
        });
        Ok(Relay { port, done })
    }

    /// Where to connect instead of the target.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Waits for the connection to end both ways; the CPU both threads spent on it.
    pub(crate) fn finish(self) -> io::Result<RelayCpu> {
        self.done
            .join()
            .map_err(|_| io::Error::other("the relay panicked"))?
    }
}

fn accept_within(listener: &TcpListener, limit: Duration) -> io::Result<TcpStream> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + limit;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                return Ok(stream);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Copies until end of file, then half-closes `to`; the calling thread's CPU meanwhile.
fn copy_counting_cpu(mut from: TcpStream, mut to: TcpStream) -> io::Result<RelayCpu> {
    let start = thread_cpu()?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(buf.get(..n).unwrap_or_default())?;
    }
    // The peer may already be gone (the other direction ended first); nothing is lost then.
    let _ = to.shutdown(Shutdown::Write);
    let end = thread_cpu()?;
    Ok(RelayCpu {
        user: end.user - start.user,
        system: end.system - start.system,
    })
}

/// The calling thread's CPU seconds so far.
fn thread_cpu() -> io::Result<RelayCpu> {
    let stat = ProcStat::read_path("/proc/thread-self/stat")
        .ok_or_else(|| io::Error::other("cannot read /proc/thread-self/stat"))?;
    let user = stat.user_seconds();
    Ok(RelayCpu {
        user,
        system: stat.cpu_seconds() - user,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relays_both_ways_and_counts_its_cpu() {
        let target = TcpListener::bind("127.0.0.1:0").unwrap();
        let target_port = target.local_addr().unwrap().port();
        let server = thread::spawn(move || {
            let (mut s, _) = target.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            s.write_all(&got).unwrap();
        });
        let relay = Relay::start(target_port).unwrap();
        let mut c = TcpStream::connect(("127.0.0.1", relay.port())).unwrap();
        c.set_read_timeout(Some(WAIT)).unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        c.write_all(&data).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        c.read_to_end(&mut back).unwrap();
        assert!(back == data, "{} bytes back of {}", back.len(), data.len());
        server.join().unwrap();
        relay
            .finish()
            .expect("the relay ends when both directions have, and reads its own CPU");
    }
}
