//! The per-channel buffer of received data waiting for the local socket.
//!
//! A `Vec` with a read offset rather than a ring, so [`RecvBuffer::as_slice`] is always one
//! slice the driver can hand to a single `write`. Dead bytes at the front are reclaimed by
//! moving the live ones down only when that frees at least as much room as it copies, which
//! keeps the copying amortised to at most once per byte.
//!
//! A drained buffer keeps a small allocation ([`KEEP_WHEN_DRAINED`]) and gives a larger one
//! back: a connection that once carried a bulk transfer and now idles (a pooled database
//! connection) holds no more than one that never did. The size it reached is remembered, so
//! the next bulk fill allocates once instead of growing by doubling, copying as it goes.

/// The largest allocation a drained buffer keeps.
pub(crate) const KEEP_WHEN_DRAINED: usize = 64 * 1024;

#[derive(Debug, Default)]
pub(crate) struct RecvBuffer {
    data: Vec<u8>,
    start: usize,
    /// The most the buffer held since it was last drained.
    high: usize,
    /// What it held at most before it was last drained: the first push into an empty buffer
    /// reserves this much.
    last_high: usize,
}

impl RecvBuffer {
    /// The bytes not yet consumed, in order.
    pub(crate) fn as_slice(&self) -> &[u8] {
        self.data.get(self.start..).unwrap_or_default()
    }

    pub(crate) fn len(&self) -> usize {
        self.data.len().saturating_sub(self.start)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends received bytes. The caller has already checked them against the receive window,
    /// which is what bounds this buffer.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        if self.data.is_empty() && self.data.capacity() < bytes.len() {
            self.data.reserve(self.last_high.max(bytes.len()));
        }
        let spare = self.data.capacity().saturating_sub(self.data.len());
        if self.start > 0 && spare < bytes.len() && self.start >= self.len() {
            let start = self.start.min(self.data.len());
            self.data.drain(..start);
            self.start = 0;
        }
        self.data.extend_from_slice(bytes);
        self.high = self.high.max(self.len());
    }

    /// Drops up to `n` bytes from the front; returns how many were dropped.
    pub(crate) fn consume(&mut self, n: usize) -> usize {
        let n = n.min(self.len());
        self.start = self.start.saturating_add(n);
        if self.start >= self.data.len() {
            self.data.clear();
            self.start = 0;
            self.last_high = core::mem::take(&mut self.high);
            if self.data.capacity() > KEEP_WHEN_DRAINED {
                self.data = Vec::new();
            }
        }
        n
    }

    /// Forgets the contents and gives the memory back: nobody will read them.
    pub(crate) fn discard(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn drained_buffer_keeps_its_allocation() {
        let mut b = RecvBuffer::default();
        b.push(&[1; 1000]);
        let cap = b.data.capacity();
        assert_eq!(b.consume(1000), 1000);
        assert!(b.is_empty());
        b.push(&[2; 1000]);
        assert_eq!(b.data.capacity(), cap);
        assert_eq!(b.as_slice(), &[2; 1000][..]);
    }

    #[test]
    fn drained_buffer_gives_a_large_allocation_back_and_reserves_it_once_next_time() {
        let mut b = RecvBuffer::default();
        for _ in 0..8 {
            b.push(&[1; 32 * 1024]);
        }
        assert_eq!(b.len(), 256 * 1024);
        assert_eq!(b.consume(256 * 1024), 256 * 1024);
        assert_eq!(b.data.capacity(), 0, "an idle channel holds nothing");
        // The next fill allocates the size the last one reached at its first push.
        b.push(&[2; 32 * 1024]);
        let cap = b.data.capacity();
        assert!(cap >= 256 * 1024, "{cap}");
        for _ in 1..8 {
            b.push(&[2; 32 * 1024]);
        }
        assert_eq!(
            b.data.capacity(),
            cap,
            "no growth, so no copy while filling"
        );
        assert_eq!(b.as_slice(), &[2; 256 * 1024][..]);
    }

    #[test]
    fn consume_more_than_held_is_clamped() {
        let mut b = RecvBuffer::default();
        b.push(b"abc");
        assert_eq!(b.consume(10), 3);
        assert_eq!(b.as_slice(), b"");
        assert_eq!(b.consume(1), 0);
    }

    #[test]
    fn compaction_keeps_order_and_bounds_capacity() {
        let mut b = RecvBuffer::default();
        b.push(&[0; 64]);
        let cap = b.data.capacity();
        assert_eq!(b.consume(40), 40);
        // 24 live bytes, 40 dead: compacting makes room without growing.
        b.push(&[7; 30]);
        assert_eq!(b.data.capacity(), cap);
        assert_eq!(b.len(), 54);
        assert_eq!(b.as_slice().get(..24), Some(&[0; 24][..]));
        assert_eq!(b.as_slice().get(24..), Some(&[7; 30][..]));
    }

    #[test]
    fn discard_frees_memory() {
        let mut b = RecvBuffer::default();
        b.push(&[1; 4096]);
        b.discard();
        assert!(b.is_empty());
        assert_eq!(b.data.capacity(), 0);
    }

    proptest! {
        #[test]
        fn behaves_like_a_queue(ops in proptest::collection::vec((any::<bool>(), 0usize..200), 0..100)) {
            let mut b = RecvBuffer::default();
            let mut model = std::collections::VecDeque::new();
            let mut next = 0u8;
            let mut max_live = 0usize;
            for (push, n) in ops {
                if push {
                    let bytes: Vec<u8> = (0..n).map(|_| { next = next.wrapping_add(1); next }).collect();
                    b.push(&bytes);
                    model.extend(bytes);
                } else {
                    let got = b.consume(n);
                    prop_assert_eq!(got, n.min(model.len()));
                    model.drain(..got);
                }
                max_live = max_live.max(model.len());
                prop_assert_eq!(b.as_slice(), &model.iter().copied().collect::<Vec<_>>()[..]);
                // Dead space never exceeds live data plus the last push by much: memory stays
                // proportional to what the window lets the peer send.
                prop_assert!(b.data.capacity() <= 4 * max_live.max(8) + 400);
            }
        }
    }
}
