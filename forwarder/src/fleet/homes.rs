//! The threads a fleet's sessions live on. Each runs a single-threaded runtime, and a session
//! is given one of them for its life: its supervisor and driver, the listeners of its tunnels
//! and every connection they accept run there, so a packet goes from the bastion's socket to
//! the local one (and back) without passing between threads, as in `forwarder -L`. A shared
//! multi-threaded runtime moved those tasks between its workers and woke the idle one over and
//! over: a download through `forwarder serve` took about a tenth more CPU per GiB than through
//! `forwarder -L`, and moved a tenth less.
//!
//! The fleet's own work (the file, signals, the admin endpoint, probes, session watchers)
//! stays on the main thread.

use std::io;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// How many threads carry sessions unless `--threads` says otherwise: the two workers the
/// fleet's runtime had before.
pub const HOMES: usize = 2;

/// How long a stopping home waits for its tasks to go.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// The running homes; [`Homes::stop`] ends them.
#[derive(Debug)]
pub struct Homes {
    homes: Vec<Home>,
}

#[derive(Debug)]
struct Home {
    handle: Handle,
    stop: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

impl Homes {
    /// Starts `n` threads (at least one), each with its own runtime.
    pub fn start(n: usize) -> io::Result<Self> {
        let mut homes = Vec::new();
        for i in 0..n.max(1) {
            let runtime = Builder::new_current_thread().enable_all().build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("session-home-{i}"))
                .spawn(move || {
                    // Runs what is spawned on the handle until told to stop (or until the
                    // fleet is gone without saying so).
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                    runtime.shutdown_timeout(STOP_GRACE);
                })?;
            homes.push(Home {
                handle,
                stop,
                thread,
            });
        }
        Ok(Self { homes })
    }

    /// The runtimes, in order: what the fleet spawns a session's tasks on.
    pub fn handles(&self) -> Vec<Handle> {
        self.homes.iter().map(|h| h.handle.clone()).collect()
    }

    /// Stops every home: tasks still on one are dropped after at most a second.
    pub fn stop(self) {
        for home in self.homes {
            let _ = home.stop.send(());
            let _ = home.thread.join();
        }
    }
}

/// Which of `homes` homes a new session: the one with the fewest sessions, given the home of
/// each live session; the first of them on a tie.
pub fn pick(homes: usize, live: impl Iterator<Item = usize>) -> usize {
    let mut count = vec![0usize; homes.max(1)];
    for h in live {
        if let Some(c) = count.get_mut(h) {
            *c += 1;
        }
    }
    count
        .iter()
        .enumerate()
        .min_by_key(|&(i, c)| (*c, i))
        .map_or(0, |(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_session_goes_to_the_home_with_the_fewest() {
        assert_eq!(pick(2, [].into_iter()), 0);
        assert_eq!(pick(2, [0].into_iter()), 1);
        assert_eq!(pick(2, [0, 1].into_iter()), 0);
        assert_eq!(pick(2, [1, 1, 0].into_iter()), 0);
        assert_eq!(pick(3, [0, 2, 0].into_iter()), 1);
        // A home index out of range (none is made) does not count, nor panic.
        assert_eq!(pick(2, [5, 0].into_iter()), 1);
        assert_eq!(pick(0, [].into_iter()), 0);
    }

    #[test]
    fn a_sessions_tasks_and_what_they_spawn_run_on_its_home_thread() {
        let homes = Homes::start(2).unwrap();
        let handles = homes.handles();
        assert_eq!(handles.len(), 2);
        let main = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for (i, h) in handles.iter().enumerate() {
            let name = main.block_on(async {
                h.spawn(async {
                    let outer = std::thread::current().name().map(str::to_owned);
                    // What a session's task spawns (its driver, a connection) stays home.
                    let inner = tokio::spawn(async {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        std::thread::current().name().map(str::to_owned)
                    })
                    .await
                    .unwrap();
                    (outer, inner)
                })
                .await
                .unwrap()
            });
            let want = Some(format!("session-home-{i}"));
            assert_eq!(name, (want.clone(), want));
        }
        // A task that never ends does not hold up the stop.
        handles[0].spawn(std::future::pending::<()>());
        homes.stop();
    }
}
