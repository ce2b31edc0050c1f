//! Owns the random identifiers meteomesh hands out (node ids, secrets, token ids, account
//! keys, cookies): lowercase hex of fresh random bytes, and the check that a value a
//! client presents has the shape of one. Publishes and consumes nothing.

/// `bytes` random bytes as lowercase hex (`2 × bytes` characters).
pub fn hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// Whether `s` has the shape of `hex(16)` (a cookie value meteomesh issues).
pub fn is_hex16(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_tokens() {
        let a = hex(16);
        assert!(is_hex16(&a), "{a}");
        assert_ne!(a, hex(16));
        assert_eq!(hex(6).len(), 12);
        assert!(!is_hex16("xyz"));
        assert!(!is_hex16(&"g".repeat(32)));
    }
}
