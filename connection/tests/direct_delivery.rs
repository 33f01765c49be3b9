//! Channel data handed straight to the local side (`handle_payload_with`): what is taken
//! counts as consumed, what is not stays buffered, and order is never broken.

use ssh_connection::msg::{ChannelData, ChannelOpenConfirmation, ConnectionMessage, WindowAdjust};
use ssh_connection::{ChannelId, Config, Connection, Event};

fn encode<'a, M: ConnectionMessage<'a>>(m: &M) -> Vec<u8> {
    let mut v = Vec::new();
    m.encode(&mut v);
    v
}

fn data(bytes: &[u8]) -> Vec<u8> {
    encode(&ChannelData {
        recipient: 0,
        data: bytes,
    })
}

fn open(window: u32) -> Connection {
    let mut conn = Connection::new(Config {
        initial_window: window,
        max_packet: 32768,
    });
    let mut sink: Vec<Vec<u8>> = Vec::new();
    let id = conn
        .open_direct_tcpip("db", 5432, "127.0.0.1", 1, &mut sink)
        .unwrap();
    assert_eq!(id, ChannelId(0));
    let confirm = encode(&ChannelOpenConfirmation {
        recipient: 0,
        sender: 7,
        initial_window: 1 << 20,
        max_packet: 32768,
    });
    conn.handle_payload(&confirm, &mut sink).unwrap();
    assert_eq!(conn.poll_event(), Some(Event::Opened(ChannelId(0))));
    conn
}

#[test]
fn direct_delivery_takes_what_it_can_and_buffers_the_rest_in_order() {
    let mut conn = open(1000);
    let mut sink: Vec<Vec<u8>> = Vec::new();
    let mut delivered = Vec::new();
    // The local side takes 100 of 300 bytes; the rest must be buffered.
    conn.handle_payload_with(&data(&[1; 300]), &mut sink, &mut |id, d| {
        assert_eq!(id, ChannelId(0));
        delivered.extend_from_slice(&d[..100]);
        100
    })
    .unwrap();
    assert_eq!(delivered, vec![1; 100]);
    assert_eq!(conn.received(ChannelId(0)), &[1; 200][..]);
    assert_eq!(conn.poll_event(), Some(Event::Data(ChannelId(0))));
    // With bytes buffered, new data must queue behind them, not jump ahead.
    conn.handle_payload_with(&data(&[2; 50]), &mut sink, &mut |_, _| {
        panic!("must not deliver past buffered data")
    })
    .unwrap();
    let mut expect = vec![1u8; 200];
    expect.extend([2u8; 50]);
    assert_eq!(conn.received(ChannelId(0)), &expect[..]);
    assert!(
        sink.is_empty(),
        "no window adjust before half the window is consumed"
    );
}

#[test]
fn delivered_bytes_credit_the_window_like_consumed_ones() {
    let mut conn = open(1000);
    let mut sink: Vec<Vec<u8>> = Vec::new();
    // 600 of a 1000-byte window, all delivered: past half, so a WINDOW_ADJUST of 600 goes out.
    conn.handle_payload_with(&data(&[3; 600]), &mut sink, &mut |_, d| d.len())
        .unwrap();
    assert!(conn.received(ChannelId(0)).is_empty());
    assert_eq!(conn.poll_event(), None, "nothing buffered, no Data event");
    assert_eq!(
        sink,
        vec![encode(&WindowAdjust {
            recipient: 7,
            bytes: 600
        })]
    );
    // The window is whole again: a full 1000 bytes are accepted.
    sink.clear();
    conn.handle_payload_with(&data(&[4; 1000]), &mut sink, &mut |_, _| 0)
        .unwrap();
    assert_eq!(conn.received(ChannelId(0)).len(), 1000);
    // And one byte more would overflow it.
    assert!(conn.handle_payload(&data(&[5]), &mut sink).is_err());
}
