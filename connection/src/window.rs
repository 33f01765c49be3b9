//! Flow-control windows (RFC 4254 section 5.2), with every operation checked.
//!
//! A window is the number of bytes one side may still send on a channel. It lives in a `u32`
//! on the wire, so a WINDOW_ADJUST that would take it past 2^32-1 is a protocol error, not a
//! wraparound; and data beyond it is a protocol error, not a bigger buffer.
//!
//! [`Window`] is the bare counter, used as is for the peer's window (what we may send).
//! [`ReceiveWindow`] wraps one for our side: it also remembers how many delivered bytes have
//! not been credited back yet, and decides when a WINDOW_ADJUST is worth sending.

use core::fmt;

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
}

impl ReceiveWindow {
    /// A window of `max` bytes, all of it granted to the peer.
    pub const fn new(max: u32) -> Self {
        Self {
            window: Window::new(max),
            max,
            uncredited: 0,
            threshold: max / 2,
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
        }
    }

    /// Bytes the peer may still send.
    pub const fn available(&self) -> u32 {
        self.window.available()
    }

    /// The configured size, which the granted window never exceeds.
    pub const fn max(&self) -> u32 {
        self.max
    }

    /// The peer sent `len` bytes (CHANNEL_DATA or CHANNEL_EXTENDED_DATA).
    pub fn receive(&mut self, len: usize) -> Result<(), WindowError> {
        self.window.take(len)
    }

    /// `n` received bytes left our hands. Returns the number of bytes to credit with a
    /// WINDOW_ADJUST once the threshold (half the window unless set lower) has been
    /// delivered, and `None` until then.
    ///
    /// `n` is clamped to the bytes received and not yet delivered, so a confused caller can
    /// never make us grant more than `max`.
    pub fn consume(&mut self, n: usize) -> Option<u32> {
        let in_flight = self
            .max
            .saturating_sub(self.window.available())
            .saturating_sub(self.uncredited);
        let n = u32::try_from(n).unwrap_or(u32::MAX).min(in_flight);
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
}
