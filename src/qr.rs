//! QR payloads and their SVG rendering, plus the random refs and pairing codes
//! a QR stands for.

use base64::Engine;
use qrcode::EcLevel;

// Crockford base32 without check symbol: no I, L, O or U.
use pairgate_protocol::CODE_ALPHABET as CROCKFORD;
/// What a typed code is belongs to the wire contract (clients check it too).
pub use pairgate_protocol::normalize_code;

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

/// The text a QR code encodes: `<public-url>/phone#ref=<REF>`.
pub fn payload(public_url: &str, reference: &str) -> String {
    format!("{}/phone#ref={reference}", public_url.trim_end_matches('/'))
}

/// Modules of white border around the code, as the QR spec asks.
const QUIET_ZONE: usize = 4;

/// The module matrix of `payload` (width, colours row by row).
///
/// Medium error correction keeps the code small enough to scan from a laptop
/// screen while tolerating glare. The mask is fixed instead of scored: every
/// mask decodes, and scoring all eight is most of the `qrcode` crate's cost
/// (each pairing socket gets a fresh code every rotation).
fn encode(payload: &str) -> Option<(usize, Vec<qrcode::Color>)> {
    let bits = qrcode::bits::encode_auto(payload.as_bytes(), EcLevel::M).ok()?;
    let version = bits.version();
    let (data, ec) =
        qrcode::ec::construct_codewords(&bits.into_bytes(), version, EcLevel::M).ok()?;
    let mut canvas = qrcode::canvas::Canvas::new(version, EcLevel::M);
    canvas.draw_all_functional_patterns();
    canvas.draw_data(&data, &ec);
    canvas.apply_mask(qrcode::canvas::MaskPattern::Checkerboard);
    Some((version.width() as usize, canvas.into_colors()))
}

/// Renders `payload` as an SVG document.
///
/// Written by hand from the module matrix rather than through the `qrcode`
/// crate's renderer: one path of horizontal runs is a few times smaller (every
/// pairing socket sends it, and the socket's write buffer keeps the capacity of
/// its largest frame) and several times faster to produce.
pub fn render_svg(payload: &str) -> String {
    let Some((width, colors)) = encode(payload) else {
        // Only a payload longer than a QR code can hold gets here; the public
        // URL is operator-chosen, so say so in the image's place.
        return String::from(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 10 10\"><title>payload too long for a QR code</title></svg>",
        );
    };
    let side = width + 2 * QUIET_ZONE;
    let mut svg = String::with_capacity(200 + width * width);
    use std::fmt::Write;
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {side} {side}\" width=\"264\" height=\"264\" shape-rendering=\"crispEdges\"><rect width=\"{side}\" height=\"{side}\" fill=\"#fff\"/><path fill=\"#111\" d=\""
    );
    for (y, row) in colors.chunks(width).enumerate() {
        let mut x = 0;
        while x < width {
            if row[x] != qrcode::Color::Dark {
                x += 1;
                continue;
            }
            let start = x;
            while x < width && row[x] == qrcode::Color::Dark {
                x += 1;
            }
            let _ = write!(
                svg,
                "M{} {}h{}v1h-{}z",
                start + QUIET_ZONE,
                y + QUIET_ZONE,
                x - start,
                x - start
            );
        }
    }
    svg.push_str("\"/></svg>");
    svg
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

    /// The matrix decodes, with a real decoder, to the payload.
    #[test]
    fn matrix_decodes_to_payload() {
        let payload = payload("http://127.0.0.1:8080", &new_ref());
        let (width, colors) = encode(&payload).unwrap();
        let scale = 4;
        let side = (width + 2 * QUIET_ZONE) * scale;
        let mut img = rqrr::PreparedImage::prepare_from_greyscale(side, side, |x, y| {
            let (mx, my) = (x / scale, y / scale);
            let inside = (QUIET_ZONE..QUIET_ZONE + width).contains(&mx)
                && (QUIET_ZONE..QUIET_ZONE + width).contains(&my);
            if inside && colors[(my - QUIET_ZONE) * width + mx - QUIET_ZONE] == qrcode::Color::Dark
            {
                0
            } else {
                255
            }
        });
        let grids = img.detect_grids();
        assert_eq!(grids.len(), 1);
        let (_, content) = grids[0].decode().unwrap();
        assert_eq!(content, payload);
    }

    #[test]
    fn svg_is_a_document() {
        let s = render_svg(&payload("http://127.0.0.1:8080/", "abc"));
        assert!(s.contains("<svg"));
    }
}
