//! [`clip`]: a string from a client or a peer, cut short before it goes
//! into a message or a log line (gateway and queue alike).

/// Longest client-supplied text put into a message or a log line.
pub const CLIP_BYTES: usize = 128;

/// `text` cut to [`CLIP_BYTES`] (at a character boundary), saying how long
/// it was: a client's string goes into messages and logs at a bounded cost.
pub fn clip(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= CLIP_BYTES {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = CLIP_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}… ({} bytes)", &text[..end], text.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_keeps_short_text_and_cuts_long_text_at_a_character() {
        assert_eq!(clip("appId \"x\""), "appId \"x\"");
        let long = "é".repeat(300);
        let c = clip(&long);
        assert!(c.len() < CLIP_BYTES + 32, "{}", c.len());
        assert!(c.ends_with("… (600 bytes)"), "{c}");
    }
}
