//! Flow-control windows (RFC 4254 section 5.2), with every operation checked.
//!
//! A window is the number of bytes one side may still send on a channel. It lives in a `u32`
//! on the wire, so a WINDOW_ADJUST that would take it past 2^32-1 is a protocol error, not a
//! wraparound; and data beyond it is a protocol error, not a bigger buffer.
//!
//! [`Window`] is the bare counter, used as is for the peer's window (what we may send).
//! [`ReceiveWindow`] wraps one for our side: it also remembers how many delivered bytes have
//! not been credited back yet, and decides when a WINDOW_ADJUST is worth sending, and grows
//! when a whole window is consumed within about a round trip (see [`WindowGrowth`]).

use core::fmt;
use std::time::{Duration, Instant};

/// What went wrong with a window; the connection adds which channel it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WindowError {
    /// Growing the window by `add` would take it past 2^32-1.
    Overflow {
        /// The window before the adjustment.
        window: u32,
        /// The adjustment asked for.
        add: u32,
    },
    /// `len` bytes were sent when only `window` were allowed.
    Exceeded {
        /// The window before the data.
        window: u32,
        /// How many bytes came.
        len: usize,
    },
}

impl fmt::Display for WindowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Overflow { window, add } => write!(
                f,
                "window adjustment of {add} bytes on a window of {window} bytes exceeds 2^32-1"
            ),
            Self::Exceeded { window, len } => {
                write!(f, "{len} bytes sent into a window of {window} bytes")
            }
        }
    }
}

impl std::error::Error for WindowError {}

/// Bytes one side may still send on a channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    available: u32,
}

impl Window {
    /// A window that allows `bytes` bytes.
    pub const fn new(bytes: u32) -> Self {
        Self { available: bytes }
    }

    /// Bytes that may still be sent.
    pub const fn available(self) -> u32 {
        self.available
    }

    /// How many of `wanted` bytes fit now.
    pub fn allowance(self, wanted: usize) -> usize {
        wanted.min(usize::try_from(self.available).unwrap_or(usize::MAX))
    }

    /// Adds `bytes` (a WINDOW_ADJUST); an overflow leaves the window unchanged.
    pub fn grow(&mut self, bytes: u32) -> Result<(), WindowError> {
        self.available = self
            .available
            .checked_add(bytes)
            .ok_or(WindowError::Overflow {
                window: self.available,
                add: bytes,
            })?;
        Ok(())
    }

    /// Uses up `bytes`; more than is available leaves the window unchanged.
    pub fn take(&mut self, bytes: usize) -> Result<(), WindowError> {
        let exceeded = WindowError::Exceeded {
            window: self.available,
            len: bytes,
        };
        let bytes = u32::try_from(bytes).map_err(|_| exceeded)?;
        self.available = self.available.checked_sub(bytes).ok_or(exceeded)?;
        Ok(())
    }
}

/// Our receive window on one channel: what the peer may still send, plus the delivered bytes
/// not yet credited back to it.
///
/// Invariant: `available + buffered + uncredited == max`, where `buffered` is what the peer
/// sent that has not been consumed yet. So the peer can never make us hold more than `max`
/// bytes, and crediting never grants more than `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiveWindow {
    window: Window,
    max: u32,
    uncredited: u32,
    threshold: u32,
    /// The size it started with; `max` grows from here.
    base: u32,
    /// When the bytes counted in `epoch_consumed` started to be consumed.
    epoch_start: Option<Instant>,
    /// Bytes consumed since `epoch_start`; a whole window of them ends the epoch.
    epoch_consumed: u32,
    /// Bytes of a grown window still to give back: consumed bytes that will not be
    /// credited, because the reader fell behind (see [`WindowGrowth`]).
    shrink: u32,
    /// When a credit went out while the peer had no window left: whatever it sends next
    /// was sent after that credit reached it, so its arrival times a round trip.
    blocked_credit: Option<Instant>,
}

impl ReceiveWindow {
    /// A window of `max` bytes, all of it granted to the peer.
    pub const fn new(max: u32) -> Self {
        Self {
            window: Window::new(max),
            max,
            uncredited: 0,
            threshold: max / 2,
            base: max,
            epoch_start: None,
            epoch_consumed: 0,
            shrink: 0,
            blocked_credit: None,
        }
    }

    /// A window of `max` bytes that is credited back once `threshold` bytes (at most half
    /// the window) have been delivered. OpenSSH credits after three maximum-size packets, so
    /// the sender's window stays nearly full and it never waits on us.
    pub const fn with_threshold(max: u32, threshold: u32) -> Self {
        let half = max / 2;
        Self {
            window: Window::new(max),
            max,
            uncredited: 0,
            threshold: if threshold < half { threshold } else { half },
            base: max,
            epoch_start: None,
            epoch_consumed: 0,
            shrink: 0,
            blocked_credit: None,
        }
    }

    /// Bytes the peer may still send.
    pub const fn available(&self) -> u32 {
        self.window.available()
    }

    /// The window's current size (the configured one, or larger once it grew), which the
    /// granted window never exceeds.
    pub const fn max(&self) -> u32 {
        self.max
    }

    /// How much the window grew above the size it started with.
    pub const fn extra(&self) -> u32 {
        self.max.saturating_sub(self.base)
    }

    /// The peer sent `len` bytes (CHANNEL_DATA or CHANNEL_EXTENDED_DATA).
    pub fn receive(&mut self, len: usize) -> Result<(), WindowError> {
        self.window.take(len)
    }

    /// Like [`receive`](Self::receive), at `growth`'s clock: the first data after a credit
    /// that found the peer's window empty is a round-trip sample for `growth` (the peer
    /// could send it only once the credit arrived; our own delay in reading it only makes
    /// the sample longer, and `growth` keeps the smallest).
    pub fn receive_at(&mut self, len: usize, growth: &mut WindowGrowth) -> Result<(), WindowError> {
        self.window.take(len)?;
        if let (Some(sent), Some(now)) = (self.blocked_credit.take(), growth.now) {
            growth.observe_rtt(now.saturating_duration_since(sent));
        }
        Ok(())
    }

    /// `n` received bytes left our hands. Returns the number of bytes to credit with a
    /// WINDOW_ADJUST once the threshold (half the window unless set lower) has been
    /// delivered, and `None` until then.
    ///
    /// `n` is clamped to the bytes received and not yet delivered, so a confused caller can
    /// never make us grant more than `max`.
    pub fn consume(&mut self, n: usize) -> Option<u32> {
        let n = self.clamp(n);
        self.credit(n)
    }

    /// Like [`consume`](Self::consume), and grows or shrinks the window as
    /// [`WindowGrowth`] says; `buffered` is how much received data still waits for the
    /// local reader. Returns the credit plus the growth, to be sent in one WINDOW_ADJUST.
    pub fn consume_and_grow(
        &mut self,
        n: usize,
        buffered: usize,
        growth: &mut WindowGrowth,
    ) -> Option<u32> {
        let n = self.clamp(n);
        let n = self.shrink_by(n, buffered, growth);
        let blocked = self.window.available() == 0;
        let credit = self.credit(n);
        let credit = match self.grow(n, buffered, growth) {
            0 => credit,
            extra => Some(credit.unwrap_or(0).saturating_add(extra)),
        };
        if blocked && credit.is_some() {
            self.blocked_credit = growth.now;
        }
        credit
    }

    /// `n` limited to the bytes received and not yet delivered.
    fn clamp(&self, n: usize) -> u32 {
        let in_flight = self
            .max
            .saturating_sub(self.window.available())
            .saturating_sub(self.uncredited);
        u32::try_from(n).unwrap_or(u32::MAX).min(in_flight)
    }

    /// Counts `n` more delivered bytes; returns the credit once the threshold is reached.
    fn credit(&mut self, n: u32) -> Option<u32> {
        self.uncredited = self.uncredited.checked_add(n)?;
        if self.uncredited == 0 || self.uncredited < self.threshold {
            return None;
        }
        let add = self.uncredited;
        let mut grown = self.window;
        grown.grow(add).ok()?;
        if grown.available() > self.max {
            return None;
        }
        self.window = grown;
        self.uncredited = 0;
        Some(add)
    }

    /// A grown window whose reader fell behind (more than half of it waits unread) is
    /// halved, down to the base at most: of the `n` bytes just consumed, as many as are
    /// still to be given back are not credited, and the session's budget gets them back.
    /// Returns the bytes left to credit.
    fn shrink_by(&mut self, n: u32, buffered: usize, growth: &mut WindowGrowth) -> u32 {
        let behind = buffered > usize::try_from(self.max / 2).unwrap_or(usize::MAX);
        if self.shrink == 0 && self.max > self.base && behind {
            self.shrink = self.extra().min(self.max / 2);
            self.epoch_start = None;
            self.epoch_consumed = 0;
        }
        let absorbed = self.shrink.min(n);
        self.shrink -= absorbed;
        self.max -= absorbed;
        growth.release(absorbed);
        n - absorbed
    }

    /// Counts `n` consumed bytes towards the current epoch; when it holds a whole window,
    /// decides whether to grow and starts the next one. Returns the bytes granted on top.
    fn grow(&mut self, n: u32, buffered: usize, growth: &mut WindowGrowth) -> u32 {
        let Some(now) = growth.now else {
            return 0;
        };
        let start = *self.epoch_start.get_or_insert(now);
        self.epoch_consumed = self.epoch_consumed.saturating_add(n);
        if self.epoch_consumed < self.max {
            return 0;
        }
        self.epoch_start = Some(now);
        self.epoch_consumed = 0;
        let Some(rtt) = growth.rtt else {
            return 0;
        };
        if self.shrink > 0 {
            return 0;
        }
        let window_limited =
            now.saturating_duration_since(start) <= rtt.saturating_mul(GROW_WITHIN_RTTS);
        let keeping_up = buffered <= usize::try_from(self.max / 4).unwrap_or(usize::MAX);
        if !window_limited || !keeping_up || covers(self.max, rtt) {
            return 0;
        }
        let add = growth.room(self.max);
        if add == 0 || self.window.grow(add).is_err() {
            return 0;
        }
        self.max = self.max.saturating_add(add);
        growth.granted = growth.granted.saturating_add(u64::from(add));
        add
    }
}

/// The most one channel's receive window grows to: 32 MiB, 16 times the 2 MiB base. Enough
/// for about 320 MiB/s at 50 ms round trips (the window must hold at least one round trip of
/// data), and the most a single channel can make us buffer for a reader that slows down
/// after its window grew.
pub const CHANNEL_WINDOW_CAP: u32 = 32 << 20;

/// The most all channels of one session may hold above their base windows together: 128 MiB,
/// four channels at [`CHANNEL_WINDOW_CAP`]. With the base windows this bounds what a session
/// can make us buffer at `128 MiB + channels x 2 MiB`.
pub const SESSION_WINDOW_BUDGET: u64 = 128 << 20;

/// How many round trips consuming a whole window may take and still count as the window
/// being what limits the transfer. A window-limited channel delivers one window per round
/// trip; 2 lets the window grow until it holds about two round trips of data, which leaves
/// room for the credit threshold and for round trips longer than the best one measured.
const GROW_WITHIN_RTTS: u32 = 2;

/// The rate a window need not be grown beyond: 512 MiB/s, about half of what one sshd
/// process sends on one core with AES-GCM. A window that already carries this much per
/// round trip is not what limits a transfer, and when round trips are short (a LAN, or a
/// loaded machine whose scheduling delays count as round trip) growing it only made sshd
/// hold and move more data per byte sent: on a 2-core machine, with the client sharing a
/// core with the programs at both ends, sshd spent 1.7-1.9x the CPU per GiB and downloads
/// ran at 0.64x OpenSSH's with windows grown to 8 MiB at a 2.5 ms round trip.
pub const ENOUGH_RATE: u64 = 512 << 20;

/// Whether a window of `max` bytes carries [`ENOUGH_RATE`] at round trip `rtt`.
fn covers(max: u32, rtt: Duration) -> bool {
    u128::from(max) * 1_000_000_000 >= u128::from(ENOUGH_RATE) * rtt.as_nanos()
}

/// Dynamic receive windows, shared by every channel of a connection: the clock the driver
/// passes in, the session's round trip, and how much window has been granted above the
/// channels' base windows.
///
/// A channel's window doubles (up to [`CHANNEL_WINDOW_CAP`], and while the session's
/// [`SESSION_WINDOW_BUDGET`] lasts) when the local side consumed a whole window within
/// about two round trips while little of it waited unread: the window, not the reader or
/// the link, is what limits the transfer. A slow reader consumes less than a window per
/// round trip, or leaves data waiting, and its window never grows. A reader that falls
/// behind after its window grew (more than half the window waiting unread when it next
/// takes some) gets it halved, down to the base at most: the bytes it consumes are not
/// credited until the window is that much smaller, and the session's budget gets them back.
/// So what a slow reader makes us hold comes back down towards the base window. Without a
/// clock or a round trip nothing grows, so a driver that passes neither gets fixed windows.
///
/// The round trip is the smallest one seen: each `direct-tcpip` open's (CHANNEL_OPEN to its
/// confirmation, which every tunnel has before its first byte, timed by the connection) and
/// each keepalive's. Waiting only ever adds to a sample, so the minimum is robust. Timing a
/// WINDOW_ADJUST until the data it allowed arrives was not used: when the window is not the
/// limit, that data comes a whole window later, so the "round trip" grows with the window
/// and would keep growing it. The socket's own `tcpi_rtt` is not used either: the driver is
/// generic over its stream, which need not be a TCP socket.
#[derive(Clone, Debug)]
pub struct WindowGrowth {
    now: Option<Instant>,
    rtt: Option<Duration>,
    channel_cap: u32,
    budget: u64,
    granted: u64,
}

impl Default for WindowGrowth {
    fn default() -> Self {
        Self::new(CHANNEL_WINDOW_CAP, SESSION_WINDOW_BUDGET)
    }
}

impl WindowGrowth {
    /// Windows that grow up to `channel_cap` bytes each and `budget` bytes above their base
    /// windows for all channels together.
    pub const fn new(channel_cap: u32, budget: u64) -> Self {
        Self {
            now: None,
            rtt: None,
            channel_cap,
            budget,
            granted: 0,
        }
    }

    /// The time is `now`; the driver calls this before handing in data or consumption.
    /// A clock that goes backwards is ignored.
    pub fn set_clock(&mut self, now: Instant) {
        if self.now.is_none_or(|t| now >= t) {
            self.now = Some(now);
        }
    }

    /// The time last passed to [`set_clock`](Self::set_clock).
    pub const fn now(&self) -> Option<Instant> {
        self.now
    }

    /// A round trip to the server was measured. The smallest sample is kept: every sample
    /// is the network's round trip plus some waiting (the server connecting to the target,
    /// a busy peer), never less.
    pub fn observe_rtt(&mut self, sample: Duration) {
        if self.rtt.is_none_or(|rtt| sample < rtt) {
            self.rtt = Some(sample);
        }
    }

    /// The round trip windows grow by, if one was measured.
    pub const fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// Window granted above the base windows, all channels together.
    pub const fn granted(&self) -> u64 {
        self.granted
    }

    /// How much more a window of `max` bytes may grow by now (doubling at most).
    fn room(&self, max: u32) -> u32 {
        let left = u32::try_from(self.budget.saturating_sub(self.granted)).unwrap_or(u32::MAX);
        max.min(self.channel_cap.saturating_sub(max)).min(left)
    }

    /// Replaces the per-channel cap and the session budget; what was granted stays counted.
    pub fn set_limits(&mut self, channel_cap: u32, budget: u64) {
        self.channel_cap = channel_cap;
        self.budget = budget;
    }

    /// A channel that had grown by `extra` bytes is gone.
    pub fn release(&mut self, extra: u32) {
        self.granted = self.granted.saturating_sub(u64::from(extra));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn grow_up_to_the_top_of_u32_is_allowed() {
        let mut w = Window::new(u32::MAX - 10);
        assert_eq!(w.grow(10), Ok(()));
        assert_eq!(w.available(), u32::MAX);
        assert_eq!(w.grow(0), Ok(()));
    }

    #[test]
    fn grow_past_u32_max_is_an_error_and_changes_nothing() {
        let mut w = Window::new(u32::MAX - 10);
        assert_eq!(
            w.grow(11),
            Err(WindowError::Overflow {
                window: u32::MAX - 10,
                add: 11
            })
        );
        assert_eq!(w.available(), u32::MAX - 10);
        let mut full = Window::new(u32::MAX);
        assert!(full.grow(1).is_err());
        assert!(full.grow(u32::MAX).is_err());
    }

    #[test]
    fn take_exactly_the_window_then_nothing_more() {
        let mut w = Window::new(100);
        assert_eq!(w.take(100), Ok(()));
        assert_eq!(w.available(), 0);
        assert_eq!(w.take(0), Ok(()));
        assert_eq!(w.take(1), Err(WindowError::Exceeded { window: 0, len: 1 }));
        assert_eq!(w.available(), 0);
    }

    #[test]
    fn take_more_than_u32_is_exceeded_not_truncated() {
        let mut w = Window::new(u32::MAX);
        let huge = usize::try_from(u64::from(u32::MAX) + 1).unwrap_or(usize::MAX);
        assert!(w.take(huge).is_err());
        assert_eq!(w.available(), u32::MAX);
    }

    #[test]
    fn allowance_clamps_to_the_window() {
        assert_eq!(Window::new(10).allowance(3), 3);
        assert_eq!(Window::new(10).allowance(30), 10);
        assert_eq!(Window::new(0).allowance(30), 0);
    }

    #[test]
    fn receive_window_credits_at_half() {
        let mut r = ReceiveWindow::new(1000);
        assert_eq!(r.receive(1000), Ok(()));
        assert_eq!(r.available(), 0);
        assert!(r.receive(1).is_err());
        assert_eq!(r.consume(499), None);
        assert_eq!(r.consume(1), Some(500));
        assert_eq!(r.available(), 500);
        assert_eq!(r.consume(500), Some(500));
        assert_eq!(r.available(), 1000);
    }

    #[test]
    fn receive_window_never_credits_more_than_was_received() {
        let mut r = ReceiveWindow::new(1000);
        assert_eq!(r.consume(5000), None);
        assert_eq!(r.receive(600), Ok(()));
        assert_eq!(r.consume(usize::MAX), Some(600));
        assert_eq!(r.available(), 1000);
        assert_eq!(r.consume(1), None);
    }

    #[test]
    fn tiny_receive_window_credits_every_byte() {
        let mut r = ReceiveWindow::new(1);
        assert_eq!(r.receive(1), Ok(()));
        assert_eq!(r.consume(1), Some(1));
        assert_eq!(r.available(), 1);
        let mut zero = ReceiveWindow::new(0);
        assert!(zero.receive(1).is_err());
        assert_eq!(zero.receive(0), Ok(()));
        assert_eq!(zero.consume(1), None);
    }

    #[test]
    fn receive_window_at_u32_max() {
        let mut r = ReceiveWindow::new(u32::MAX);
        assert_eq!(r.receive(u32::MAX as usize), Ok(()));
        assert_eq!(r.consume(u32::MAX as usize), Some(u32::MAX));
        assert_eq!(r.available(), u32::MAX);
    }

    proptest! {
        #[test]
        fn receive_window_invariant_holds(max in 1u32..5000,
                                          ops in proptest::collection::vec((any::<bool>(), 0usize..3000), 0..60)) {
            let mut r = ReceiveWindow::new(max);
            let mut buffered: u64 = 0;
            for (is_receive, n) in ops {
                if is_receive {
                    let before = r.available();
                    match r.receive(n) {
                        Ok(()) => buffered += n as u64,
                        Err(_) => prop_assert_eq!(r.available(), before),
                    }
                } else {
                    let n = (n as u64).min(buffered);
                    buffered -= n;
                    if let Some(add) = r.consume(n as usize) {
                        prop_assert!(add > 0);
                    }
                }
                prop_assert!(r.available() <= max);
                prop_assert!(u64::from(r.available()) + buffered + u64::from(r.uncredited) == u64::from(max));
            }
        }
    }

    #[test]
    fn threshold_credits_early_but_never_above_half_the_window() {
        // OpenSSH's rule: credit after three 32 KiB packets of a 2 MiB window.
        let mut r = ReceiveWindow::with_threshold(2 << 20, 3 * 32768);
        r.receive(100_000).unwrap();
        assert_eq!(r.consume(98_303), None);
        assert_eq!(r.consume(1), Some(98_304));
        assert_eq!(r.available(), (2 << 20) - 100_000 + 98_304);
        // A threshold above half the window is lowered to half.
        let mut r = ReceiveWindow::with_threshold(1000, 900);
        r.receive(600).unwrap();
        assert_eq!(r.consume(499), None);
        assert_eq!(r.consume(1), Some(500));
    }

    /// A channel of `base` bytes under `growth`, with a reader that consumes everything as
    /// it arrives: each round trip the peer fills the window, the local side consumes it
    /// all within `per_window` of simulated time, and `buffered` stays waiting.
    fn round_trips(
        r: &mut ReceiveWindow,
        growth: &mut WindowGrowth,
        start: Instant,
        per_window: Duration,
        buffered: usize,
        rounds: u32,
    ) -> u64 {
        let mut now = start;
        let mut granted = 0u64;
        for _ in 0..rounds {
            let window = r.available();
            r.receive(window as usize).unwrap();
            // Consumed in 16 steps over `per_window`.
            let step = window / 16;
            for i in 0..16 {
                now += per_window / 16;
                growth.set_clock(now);
                let n = if i == 15 { window - 15 * step } else { step };
                if let Some(add) = r.consume_and_grow(n as usize, buffered, growth) {
                    granted += u64::from(add);
                }
            }
        }
        granted
    }

    const MIB: u32 = 1 << 20;

    #[test]
    fn a_fast_reader_on_a_long_link_grows_the_window_up_to_the_cap() {
        let mut growth = WindowGrowth::new(32 * MIB, 128 << 20);
        growth.observe_rtt(Duration::from_millis(50));
        let mut r = ReceiveWindow::with_threshold(2 * MIB, 96 << 10);
        let t0 = Instant::now();
        // One window per 50 ms round trip: the window is the limit.
        round_trips(&mut r, &mut growth, t0, Duration::from_millis(50), 0, 10);
        assert_eq!(r.max(), 32 * MIB);
        assert_eq!(r.extra(), 30 * MIB);
        assert_eq!(growth.granted(), u64::from(30 * MIB));
        // Everything granted was sent: the peer may send the whole grown window.
        assert_eq!(r.available(), 32 * MIB);
    }

    #[test]
    fn a_slow_reader_never_grows_the_window() {
        let t0 = Instant::now();
        // Slow: a window takes ten round trips to consume.
        let mut growth = WindowGrowth::new(32 * MIB, 128 << 20);
        growth.observe_rtt(Duration::from_millis(50));
        let mut r = ReceiveWindow::with_threshold(2 * MIB, 96 << 10);
        round_trips(&mut r, &mut growth, t0, Duration::from_millis(500), 0, 10);
        assert_eq!(r.max(), 2 * MIB);
        // Fast in time, but with most of the window waiting unread: no growth either.
        let mut r = ReceiveWindow::with_threshold(2 * MIB, 96 << 10);
        round_trips(
            &mut r,
            &mut growth,
            t0,
            Duration::from_millis(50),
            1 << 20,
            10,
        );
        assert_eq!(r.max(), 2 * MIB);
        assert_eq!(growth.granted(), 0);
    }

    #[test]
    fn a_reader_that_falls_behind_gives_a_grown_window_back_down_to_the_base() {
        let mut growth = WindowGrowth::new(32 * MIB, 128 << 20);
        growth.observe_rtt(Duration::from_millis(50));
        let mut r = ReceiveWindow::with_threshold(2 * MIB, 96 << 10);
        let t0 = Instant::now();
        round_trips(&mut r, &mut growth, t0, Duration::from_millis(50), 0, 10);
        assert_eq!(r.max(), 32 * MIB);

        // The peer fills the whole grown window; the reader now takes 64 KiB at a time,
        // with everything else still waiting.
        let mut buffered = r.available();
        r.receive(buffered as usize).unwrap();
        let mut credited = 0u64;
        let mut maxes = vec![r.max()];
        let mut now = t0 + Duration::from_secs(1);
        while buffered > 0 {
            let n = buffered.min(64 << 10);
            buffered -= n;
            now += Duration::from_millis(50);
            growth.set_clock(now);
            if let Some(add) = r.consume_and_grow(n as usize, buffered as usize, &mut growth) {
                credited += u64::from(add);
                // What the peer may send, plus what waits, never exceeds the window.
                assert!(u64::from(r.available()) + u64::from(buffered) <= u64::from(r.max()));
            }
            if maxes.last() != Some(&r.max()) {
                maxes.push(r.max());
            }
        }
        // Halved each time more than half the window waited: 32 -> 16 -> 8 -> 4 -> 2.
        assert_eq!(maxes.first(), Some(&(32 * MIB)));
        assert_eq!(r.max(), 2 * MIB, "back to the base: {maxes:?}");
        assert!(maxes.windows(2).all(|w| w[1] < w[0]), "{maxes:?}");
        assert_eq!(growth.granted(), 0, "the session's budget got it all back");
        assert_eq!(r.extra(), 0);
        // 32 MiB consumed, 30 MiB of it given back: at most the base was credited.
        assert!(credited <= u64::from(2 * MIB), "credited {credited}");
        assert_eq!(
            u64::from(r.available()) + u64::from(r.uncredited),
            u64::from(r.max())
        );

        // Keeping up again, it grows again.
        round_trips(&mut r, &mut growth, now, Duration::from_millis(50), 0, 10);
        assert_eq!(r.max(), 32 * MIB);
    }

    #[test]
    fn a_window_at_its_base_never_shrinks() {
        let mut growth = WindowGrowth::new(32 * MIB, 128 << 20);
        growth.observe_rtt(Duration::from_millis(50));
        let mut now = Instant::now();
        let mut r = ReceiveWindow::with_threshold(2 * MIB, 96 << 10);
        r.receive(2 * MIB as usize).unwrap();
        let mut credited = 0;
        let mut buffered = 2 * MIB;
        // A slow reader: 32 KiB per round trip, with nearly the whole window waiting.
        while buffered > 0 {
            now += Duration::from_millis(50);
            growth.set_clock(now);
            buffered -= 32 << 10;
            credited += r
                .consume_and_grow(32 << 10, buffered as usize, &mut growth)
                .unwrap_or(0);
        }
        assert_eq!(r.max(), 2 * MIB);
        assert_eq!(
            credited + r.uncredited,
            2 * MIB,
            "every byte credited back (the last ones once the threshold is reached)"
        );
    }

    proptest! {
        #[test]
        fn growth_and_shrinking_keep_the_invariant_and_the_budget(
            ops in proptest::collection::vec((0u8..3, 0u32..(4 << 20), 0u64..200), 0..200)
        ) {
            let base = 1 << 20;
            let mut growth = WindowGrowth::new(8 << 20, 12 << 20);
            growth.observe_rtt(Duration::from_millis(10));
            let mut r = ReceiveWindow::with_threshold(base, 96 << 10);
            let mut now = Instant::now();
            let mut buffered: u64 = 0;
            for (op, n, ms) in ops {
                now += Duration::from_millis(ms);
                growth.set_clock(now);
                if op == 0 {
                    let n = n.min(r.available());
                    r.receive(n as usize).unwrap();
                    buffered += u64::from(n);
                } else {
                    let n = u64::from(n).min(buffered);
                    buffered -= n;
                    r.consume_and_grow(n as usize, buffered as usize, &mut growth);
                }
                prop_assert!(r.max() >= base && r.max() <= 8 << 20);
                prop_assert_eq!(growth.granted(), u64::from(r.extra()));
                prop_assert_eq!(
                    u64::from(r.available()) + buffered + u64::from(r.uncredited),
                    u64::from(r.max())
                );
            }
        }
    }

    #[test]
    fn no_clock_or_no_round_trip_means_fixed_windows() {
        let mut r = ReceiveWindow::with_threshold(2 * MIB, 96 << 10);
        let mut growth = WindowGrowth::default();
        r.receive(2 * MIB as usize).unwrap();
        assert_eq!(
            r.consume_and_grow(2 * MIB as usize, 0, &mut growth),
            Some(2 * MIB)
        );
        assert_eq!(r.max(), 2 * MIB);
        growth.set_clock(Instant::now());
        round_trips(&mut r, &mut growth, Instant::now(), Duration::ZERO, 0, 4);
        assert_eq!(r.max(), 2 * MIB);
    }

    #[test]
    fn growth_stays_within_the_channel_cap_and_the_session_budget() {
        let mut growth = WindowGrowth::new(12 * MIB, 14 << 20);
        growth.observe_rtt(Duration::from_millis(50));
        let t0 = Instant::now();
        let mut a = ReceiveWindow::with_threshold(2 * MIB, 96 << 10);
        round_trips(&mut a, &mut growth, t0, Duration::from_millis(50), 0, 10);
        // 2 -> 4 -> 8 -> 12: doubling, then the cap.
        assert_eq!(a.max(), 12 * MIB);
        let mut b = ReceiveWindow::with_threshold(2 * MIB, 96 << 10);
        round_trips(&mut b, &mut growth, t0, Duration::from_millis(50), 0, 10);
        // Only 4 MiB of the 14 MiB budget were left.
        assert_eq!(b.max(), 6 * MIB);
        assert_eq!(growth.granted(), 14 << 20);
        // A channel gone gives its growth back; the next one may use it.
        growth.release(a.extra());
        let mut c = ReceiveWindow::with_threshold(2 * MIB, 96 << 10);
        round_trips(&mut c, &mut growth, t0, Duration::from_millis(50), 0, 10);
        assert_eq!(c.max(), 12 * MIB);
    }

    #[test]
    fn the_smallest_round_trip_is_kept_and_the_clock_never_goes_back() {
        let mut growth = WindowGrowth::default();
        growth.observe_rtt(Duration::from_millis(60));
        growth.observe_rtt(Duration::from_millis(50));
        growth.observe_rtt(Duration::from_millis(70));
        assert_eq!(growth.rtt(), Some(Duration::from_millis(50)));
        let t = Instant::now();
        growth.set_clock(t + Duration::from_secs(1));
        growth.set_clock(t);
        assert_eq!(growth.now(), Some(t + Duration::from_secs(1)));
    }
}
