//! Receive windows that grow with the bandwidth-delay product, driven through a whole
//! connection on a simulated clock: the open's round trip is timed, a fast reader grows the
//! window with larger WINDOW_ADJUSTs, a slow one does not, and a closed channel gives its
//! growth back to the session.

use std::time::{Duration, Instant};

use ssh_connection::msg::{
    ChannelClose, ChannelData, ChannelOpenConfirmation, ConnectionMessage, WindowAdjust,
};
use ssh_connection::{ChannelId, Config, Connection, Event, Message};

const MIB: u32 = 1 << 20;
const PACKET: usize = 32 << 10;
const RTT: Duration = Duration::from_millis(50);

fn encode(m: &dyn Fn(&mut Vec<u8>)) -> Vec<u8> {
    let mut v = Vec::new();
    m(&mut v);
    v
}

/// Sum of the WINDOW_ADJUSTs in `sink`.
fn adjusted(sink: &[Vec<u8>]) -> u64 {
    sink.iter()
        .filter_map(|p| match Message::decode(p) {
            Ok(Message::WindowAdjust(WindowAdjust { bytes, .. })) => Some(u64::from(bytes)),
            _ => None,
        })
        .sum()
}

/// A connection with one open channel (id 0) whose open took one 50 ms round trip; the
/// clock stands at `t0 + RTT`.
fn opened(t0: Instant) -> Connection {
    opened_with(t0, RTT)
}

/// Like [`opened`], with an open that took `rtt`; the clock stands at `t0 + rtt`.
fn opened_with(t0: Instant, rtt: Duration) -> Connection {
    let mut conn = Connection::new(Config::default());
    let mut sink: Vec<Vec<u8>> = Vec::new();
    conn.set_clock(t0);
    assert_eq!(
        conn.open_direct_tcpip("db", 5432, "127.0.0.1", 40000, &mut sink),
        Ok(ChannelId(0))
    );
    conn.set_clock(t0 + rtt);
    let confirm = ChannelOpenConfirmation {
        recipient: 0,
        sender: 7,
        initial_window: 2 * MIB,
        max_packet: PACKET as u32,
    };
    assert_eq!(
        conn.handle_payload(&encode(&|b| confirm.encode(b)), &mut sink),
        Ok(())
    );
    assert_eq!(conn.poll_event(), Some(Event::Opened(ChannelId(0))));
    assert_eq!(conn.window_growth().rtt(), Some(rtt));
    conn
}

/// The server sends a whole window on channel 0 in packets; the reader consumes all but
/// `left_unread` of it, evenly over `per_window`. Returns the bytes the WINDOW_ADJUSTs
/// granted and the clock after.
fn one_window(
    conn: &mut Connection,
    mut now: Instant,
    window: u32,
    per_window: Duration,
    left_unread: usize,
) -> (u64, Instant) {
    let mut sink: Vec<Vec<u8>> = Vec::new();
    let chunk = vec![0x5a; PACKET];
    let packets = (window as usize).div_ceil(PACKET);
    let mut sent = 0usize;
    for _ in 0..packets {
        let n = PACKET.min(window as usize - sent);
        let data = ChannelData {
            recipient: 0,
            data: &chunk[..n],
        };
        conn.set_clock(now);
        assert_eq!(
            conn.handle_payload(&encode(&|b| data.encode(b)), &mut sink),
            Ok(())
        );
        sent += n;
        now += per_window / packets as u32;
        conn.set_clock(now);
        let ready = conn.received(ChannelId(0)).len();
        conn.consume(ChannelId(0), ready.saturating_sub(left_unread), &mut sink);
    }
    while conn.poll_event().is_some() {}
    (adjusted(&sink), now)
}

#[test]
fn a_fast_reader_grows_the_window_and_a_closed_channel_returns_the_budget() {
    let t0 = Instant::now();
    let mut conn = opened(t0);
    let mut now = t0 + RTT;
    let mut window = 2 * MIB;
    let mut granted = 0;
    for _ in 0..8 {
        let (g, t) = one_window(&mut conn, now, window, RTT, 0);
        granted += g;
        now = t + RTT;
        window = conn.receive_window(ChannelId(0)).unwrap();
    }
    assert_eq!(window, ssh_connection::window::CHANNEL_WINDOW_CAP);
    // What was granted covers every byte sent plus the growth.
    assert!(granted > u64::from(window), "{granted}");
    assert_eq!(conn.window_growth().granted(), u64::from(window - 2 * MIB));
    // The server closes: the channel's growth goes back to the session.
    let mut sink: Vec<Vec<u8>> = Vec::new();
    let close = ChannelClose { recipient: 0 };
    assert_eq!(
        conn.handle_payload(&encode(&|b| close.encode(b)), &mut sink),
        Ok(())
    );
    while conn.poll_event().is_some() {}
    assert_eq!(conn.receive_window(ChannelId(0)), None);
    assert_eq!(conn.window_growth().granted(), 0);
}

#[test]
fn a_slow_reader_keeps_the_base_window() {
    let t0 = Instant::now();
    // Consumes a window only every ten round trips.
    let mut conn = opened(t0);
    let mut now = t0 + RTT;
    for _ in 0..6 {
        let (_, t) = one_window(&mut conn, now, 2 * MIB, RTT * 10, 0);
        now = t;
    }
    assert_eq!(conn.receive_window(ChannelId(0)), Some(2 * MIB));
    // Quick in time but leaving a megabyte unread each time: the reader is behind.
    let mut conn = opened(t0);
    let mut now = t0 + RTT;
    let (_, t) = one_window(&mut conn, now, 2 * MIB, RTT, MIB as usize);
    now = t + RTT;
    let (_, _) = one_window(&mut conn, now, MIB, RTT, MIB as usize);
    assert_eq!(conn.receive_window(ChannelId(0)), Some(2 * MIB));
    assert_eq!(conn.window_growth().granted(), 0);
}

#[test]
fn the_session_budget_limits_growth_across_channels() {
    let t0 = Instant::now();
    let mut conn = opened(t0);
    conn.set_window_limits(8 * MIB, u64::from(6 * MIB));
    let mut now = t0 + RTT;
    for _ in 0..5 {
        let w = conn.receive_window(ChannelId(0)).unwrap();
        let (_, t) = one_window(&mut conn, now, w, RTT, 0);
        now = t + RTT;
    }
    // 2 -> 4 -> 8, the cap.
    assert_eq!(conn.receive_window(ChannelId(0)), Some(8 * MIB));
    assert_eq!(conn.window_growth().granted(), u64::from(6 * MIB));
}

#[test]
fn a_window_that_already_carries_enough_at_the_round_trip_does_not_grow() {
    // 2 MiB per millisecond is far more than one channel moves: no growth, however fast
    // the reader consumes.
    let t0 = Instant::now();
    let rtt = Duration::from_millis(1);
    let mut conn = opened_with(t0, rtt);
    let mut now = t0 + rtt;
    for _ in 0..4 {
        let (_, t) = one_window(&mut conn, now, 2 * MIB, rtt / 4, 0);
        now = t + rtt;
        assert_eq!(conn.receive_window(ChannelId(0)), Some(2 * MIB));
    }
    assert_eq!(conn.window_growth().granted(), 0);

    // At 5 ms, 2 MiB carries 400 MiB/s: it doubles once, to 4 MiB (800 MiB/s), and stops.
    let rtt = Duration::from_millis(5);
    let mut conn = opened_with(t0, rtt);
    let mut now = t0 + rtt;
    let mut windows = Vec::new();
    for _ in 0..4 {
        let window = conn.receive_window(ChannelId(0)).unwrap();
        let (_, t) = one_window(&mut conn, now, window, rtt, 0);
        now = t + rtt;
        windows.push(conn.receive_window(ChannelId(0)).unwrap());
    }
    assert_eq!(windows, [4 * MIB; 4]);
    assert!(u64::from(4 * MIB) * 1000 / 5 >= ssh_connection::window::ENOUGH_RATE);
}

#[test]
fn data_after_a_credit_that_found_the_window_empty_times_a_round_trip() {
    let t0 = Instant::now();
    let mut conn = opened(t0);
    let mut sink: Vec<Vec<u8>> = Vec::new();
    let packet = vec![0x33; PACKET];
    let data = encode(&|b| {
        ChannelData {
            recipient: 0,
            data: &packet,
        }
        .encode(b)
    });
    let mut now = t0 + RTT;
    // Part of the window arrives and is consumed: the credit finds window left over, so
    // the data after it (which may have been sent before the credit) times nothing.
    for _ in 0..4 {
        assert_eq!(conn.handle_payload(&data, &mut sink), Ok(()));
    }
    conn.consume(ChannelId(0), 4 * PACKET, &mut sink);
    assert!(adjusted(&sink) > 0, "a credit went out");
    now += Duration::from_millis(3);
    conn.set_clock(now);
    assert_eq!(conn.handle_payload(&data, &mut sink), Ok(()));
    assert_eq!(conn.window_growth().rtt(), Some(RTT));
    conn.consume(ChannelId(0), PACKET, &mut sink);

    // The rest of the window arrives: the server has none left when we credit, so what it
    // sends next could only leave once the credit reached it. Its arrival 20 ms later is a
    // round trip, shorter than the open's.
    sink.clear();
    let mut window_left = 2 * MIB as usize - 5 * PACKET + 4 * PACKET;
    while window_left > 0 {
        let n = PACKET.min(window_left);
        let part = encode(&|b| {
            ChannelData {
                recipient: 0,
                data: &packet[..n],
            }
            .encode(b)
        });
        assert_eq!(conn.handle_payload(&part, &mut sink), Ok(()));
        window_left -= n;
    }
    let before = adjusted(&sink);
    let unread = conn.received(ChannelId(0)).len();
    conn.consume(ChannelId(0), unread, &mut sink);
    assert!(
        adjusted(&sink) > before,
        "the credit went out with the window empty"
    );
    now += Duration::from_millis(20);
    conn.set_clock(now);
    assert_eq!(conn.handle_payload(&data, &mut sink), Ok(()));
    assert_eq!(conn.window_growth().rtt(), Some(Duration::from_millis(20)));
    while conn.poll_event().is_some() {}
}
