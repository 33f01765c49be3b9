//! Text that came from the peer (banners, DISCONNECT reasons, USERAUTH_BANNER, DEBUG) is made
//! safe before anyone logs or prints it: a hostile server must not be able to move a cursor,
//! rewrite a terminal title or forge a log line.

/// Returns `raw` as printable text: invalid UTF-8 is replaced, control characters other than
/// newline and tab become `\xNN` escapes (newlines too unless `keep_newlines`), and the
/// result is cut at `max_chars` characters with a marker.
pub fn sanitize(raw: &[u8], keep_newlines: bool, max_chars: usize) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len().min(max_chars.saturating_mul(4)));
    for (count, c) in text.chars().enumerate() {
        if count >= max_chars {
            out.push_str("[...]");
            break;
        }
        match c {
            '\n' if keep_newlines => out.push('\n'),
            '\t' => out.push('\t'),
            '\r' if keep_newlines => {}
            c if c.is_control() || is_bidi_control(c) => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Unicode bidirectional overrides can reorder what a terminal shows.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

#[cfg(test)]
mod tests {
    use super::sanitize;

    #[test]
    fn escapes_terminal_controls() {
        assert_eq!(
            sanitize(b"hi\x1b[2Jthere\x07", false, 100),
            "hi\\x1b[2Jthere\\x07"
        );
        assert_eq!(sanitize(b"a\r\nb", true, 100), "a\nb");
        assert_eq!(sanitize(b"a\r\nb", false, 100), "a\\x0d\\x0ab");
        assert_eq!(
            sanitize("x\u{202e}y".as_bytes(), false, 100),
            "x\\xe2\\x80\\xaey"
        );
    }

    #[test]
    fn bounds_length_and_replaces_invalid_utf8() {
        assert_eq!(sanitize(b"abcdef", false, 3), "abc[...]");
        assert_eq!(sanitize(b"\xff", false, 10), "\u{fffd}");
    }
}
