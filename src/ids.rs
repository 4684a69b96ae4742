//! Random identifiers the gateway hands out: session ids (`s_...`), link
//! request ids (`r_...`) and demo accounts (`demo-...`). Refs and pairing
//! codes, which have formats of their own, are in `qr.rs`.

/// `prefix` followed by `BYTES` random bytes in lower-case base32hex (which
/// also matches the account id pattern).
pub fn random_id<const BYTES: usize>(prefix: &str) -> String {
    let mut bytes = [0u8; BYTES];
    rand::fill(&mut bytes);
    let mut id = String::with_capacity(prefix.len() + BYTES * 8 / 5 + 1);
    id.push_str(prefix);
    id.push_str(&data_encoding::BASE32HEX_NOPAD.encode(&bytes).to_lowercase());
    id
}

#[cfg(test)]
mod tests {
    use super::random_id;

    #[test]
    fn ids_carry_their_prefix_and_differ() {
        let a = random_id::<12>("s_");
        assert!(a.starts_with("s_"));
        assert_eq!(a.len(), 2 + 20);
        assert!(
            a[2..]
                .chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
        );
        assert_ne!(a, random_id::<12>("s_"));
    }
}
