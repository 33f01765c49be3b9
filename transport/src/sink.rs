//! Where the layers above the transport write their messages.

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
}

impl PayloadSink for Vec<Vec<u8>> {
    fn send_with(&mut self, build: &mut dyn FnMut(&mut Vec<u8>)) {
        let mut payload = Vec::new();
        build(&mut payload);
        self.push(payload);
    }
}
