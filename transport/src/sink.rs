//! Where the layers above the transport write their messages.

use std::io::IoSliceMut;

/// Takes whole payloads (message number first) from auth and connection. The transport
/// implements it by building the packet around the payload in its output buffer, so a
/// CHANNEL_DATA message is written once and sealed in place; tests use a `Vec<Vec<u8>>`.
pub trait PayloadSink {
    /// Sends one payload: `build` appends it to the buffer it is given and must not touch
    /// what the buffer held before.
    fn send_with(&mut self, build: &mut dyn FnMut(&mut Vec<u8>));

    /// Sends a payload that already exists as bytes.
    fn send(&mut self, payload: &[u8]) {
        self.send_with(&mut |buf| buf.extend_from_slice(payload));
    }

    /// Sends up to `max` bytes that `fill` reads straight into the packets: payloads of
    /// `head` followed by the data as an SSH string of at most `chunk` bytes each (see
    /// [`Tx::frame_data`](crate::packet::Tx::frame_data)). `None`, without calling `fill`,
    /// when this sink cannot (the default, and while a key exchange holds payloads back or
    /// compression is on): the caller then reads into a buffer of its own and uses
    /// [`send_with`](Self::send_with).
    fn send_data_with(
        &mut self,
        head: &[u8],
        chunk: usize,
        max: usize,
        fill: &mut dyn FnMut(&mut [IoSliceMut<'_>]) -> usize,
    ) -> Option<usize> {
        let _ = (head, chunk, max, fill);
        None
    }
}

impl PayloadSink for Vec<Vec<u8>> {
    fn send_with(&mut self, build: &mut dyn FnMut(&mut Vec<u8>)) {
        let mut payload = Vec::new();
        build(&mut payload);
        self.push(payload);
    }
}
