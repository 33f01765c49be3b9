//! Randomness comes in from outside, so the core stays deterministic under test.

/// A source of cryptographically secure random bytes.
pub trait SecureRandom: Send {
    /// Fills `dest` with random bytes.
    fn fill(&mut self, dest: &mut [u8]);
}

/// The operating system's generator.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandom;

impl SecureRandom for OsRandom {
    fn fill(&mut self, dest: &mut [u8]) {
        // getrandom only fails when the OS has no entropy source at all; there is nothing
        // safe to continue with then.
        #[allow(clippy::expect_used)]
        getrandom::getrandom(dest).expect("the operating system's random generator failed");
    }
}
