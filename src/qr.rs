//! QR payloads and their SVG rendering, plus the random refs and pairing codes
//! a QR stands for.

use base64::Engine;
use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};

/// Crockford base32 without check symbol: no I, L, O or U.
const CROCKFORD: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

fn crockford() -> data_encoding::Encoding {
    let mut spec = data_encoding::Specification::new();
    spec.symbols.push_str(CROCKFORD);
    // The alphabet has exactly 32 symbols and no padding, so this cannot fail.
    spec.encoding().unwrap_or(data_encoding::BASE32_NOPAD)
}

/// A fresh single-use ref: 144 random bits, base64url without padding.
pub fn new_ref() -> String {
    let mut bytes = [0u8; 18];
    rand::fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A fresh pairing code of 8 Crockford symbols (40 random bits), without hyphen.
pub fn new_code() -> String {
    let mut bytes = [0u8; 5];
    rand::fill(&mut bytes);
    crockford().encode(&bytes)
}

/// `ABCDEFGH` shown as `ABCD-EFGH`.
pub fn display_code(code: &str) -> String {
    format!("{}-{}", &code[..4], &code[4..])
}

/// The canonical form of a typed code: upper-case, hyphens dropped, Crockford's
/// aliases resolved (`O` is `0`; `I` and `L` are `1`). `None` if it cannot be one.
pub fn normalize_code(typed: &str) -> Option<String> {
    let mut out = String::with_capacity(8);
    for c in typed.chars() {
        let c = match c.to_ascii_uppercase() {
            '-' => continue,
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        };
        if !CROCKFORD.contains(c) {
            return None;
        }
        out.push(c);
    }
    (out.len() == 8).then_some(out)
}

/// The text a QR code encodes: `<public-url>/phone#ref=<REF>`.
pub fn payload(public_url: &str, reference: &str) -> String {
    format!("{}/phone#ref={reference}", public_url.trim_end_matches('/'))
}

/// Renders `payload` as an SVG document.
pub fn render_svg(payload: &str) -> String {
    // Medium error correction keeps the code small enough to scan from a
    // laptop screen while tolerating glare.
    match QrCode::with_error_correction_level(payload.as_bytes(), EcLevel::M) {
        Ok(code) => code
            .render::<svg::Color<'_>>()
            .min_dimensions(232, 232)
            .quiet_zone(true)
            .dark_color(svg::Color("#111111"))
            .light_color(svg::Color("#ffffff"))
            .build(),
        // Only a payload longer than a QR code can hold gets here; the
        // public URL is operator-chosen, so say so in the image's place.
        Err(_) => String::from(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 10 10\"><title>payload too long for a QR code</title></svg>",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_eight_crockford_symbols() {
        for _ in 0..100 {
            let c = new_code();
            assert_eq!(c.len(), 8);
            assert!(c.chars().all(|ch| CROCKFORD.contains(ch)));
            assert_eq!(normalize_code(&display_code(&c).to_lowercase()), Some(c));
        }
    }

    #[test]
    fn aliases_and_bad_input() {
        assert_eq!(normalize_code("oIlO-abcd").as_deref(), Some("0110ABCD"));
        assert_eq!(normalize_code("ABCD-EFGU"), None);
        assert_eq!(normalize_code("ABC"), None);
    }

    #[test]
    fn refs_carry_at_least_128_bits() {
        let r = new_ref();
        assert!(r.len() * 6 >= 128);
        assert!(
            r.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }

    #[test]
    fn svg_is_a_document() {
        let s = render_svg(&payload("http://127.0.0.1:8080/", "abc"));
        assert!(s.contains("<svg"));
    }
}
