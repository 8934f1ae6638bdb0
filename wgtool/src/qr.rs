//! `--qr`: a tunnel file as a QR code on the terminal, for the WireGuard mobile apps ("scan
//! from QR code"), like `qrencode -t ansiutf8 < tunnel.conf`.
//!
//! Two modules per character cell (upper and lower half blocks). The colours are set
//! explicitly, light modules white on black, so the code reads the same on dark and light
//! terminals; with a quiet zone of four modules as the standard asks.

use anyhow::{Context, Result};
use qrcode::render::unicode::Dense1x2;
use qrcode::{EcLevel, QrCode};

const WHITE_ON_BLACK: &str = "\x1b[97;40m";
const RESET: &str = "\x1b[0m";

/// The text as a QR code, ready to print.
pub fn render(text: &str) -> Result<String> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::L)
        .context("the configuration is too long for a QR code")?;
    // Light modules are drawn (white blocks), dark ones left as the black background.
    let art = code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build();
    let mut out = String::with_capacity(art.len() * 2);
    for line in art.lines() {
        out.push_str(WHITE_ON_BLACK);
        out.push_str(line);
        out.push_str(RESET);
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the printed code back into modules (true = dark), as a camera would see it.
    fn modules(printed: &str) -> Vec<Vec<bool>> {
        let mut rows = Vec::new();
        for line in printed.lines() {
            let line = line.replace(WHITE_ON_BLACK, "").replace(RESET, "");
            let (mut upper, mut lower) = (Vec::new(), Vec::new());
            for c in line.chars() {
                // Drawn halves are light.
                let (u, l) = match c {
                    '█' => (false, false),
                    '▀' => (false, true),
                    '▄' => (true, false),
                    ' ' => (true, true),
                    other => panic!("unexpected character {other:?}"),
                };
                upper.push(u);
                lower.push(l);
            }
            rows.push(upper);
            rows.push(lower);
        }
        rows
    }

    #[test]
    fn the_printed_code_decodes_to_the_tunnel_file() {
        let conf = "[Interface]\nPrivateKey = aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8gd28=\n\
                    Address = fdaa:0:1:a7b:9c::2/128\nDNS = fdaa:0:1::3\n\n[Peer]\n\
                    PublicKey = d29ybGQgaGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGU=\n\
                    AllowedIPs = fdaa:0:1::/48\nEndpoint = 203.0.113.7:51820\n\
                    PersistentKeepalive = 15\n";
        let printed = render(conf).unwrap();
        let grid = modules(&printed);
        let scale = 4;
        let (w, h) = (grid[0].len() * scale, grid.len() * scale);
        let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| {
            if grid[y / scale][x / scale] {
                0
            } else {
                255
            }
        });
        let grids = img.detect_grids();
        assert_eq!(grids.len(), 1, "one code in the picture");
        let (_, text) = grids[0].decode().unwrap();
        assert_eq!(text, conf);
    }

    #[test]
    fn text_too_long_for_any_code_is_an_error() {
        assert!(render(&"x".repeat(8000)).is_err());
    }
}
