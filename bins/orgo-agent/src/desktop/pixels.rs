//! The root window's pixels (a `ZPixmap` of its depth) as 8-bit RGB, and
//! RGB as PNG.

use x11rb::protocol::xproto::{ImageOrder, Screen, Setup};

/// How the server lays out the root window's pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Format {
    /// Bits per pixel: 16, 24 or 32.
    bits: u32,
    /// A row is padded to a multiple of this many bits.
    pad: u32,
    /// Most significant byte first.
    msb: bool,
    masks: [u32; 3],
}

impl Format {
    /// The format of `screen`'s root window.
    pub(crate) fn of(setup: &Setup, screen: &Screen) -> Result<Format, String> {
        let depth = screen.root_depth;
        let pixmap = setup
            .pixmap_formats
            .iter()
            .find(|f| f.depth == depth)
            .ok_or_else(|| format!("no pixmap format for depth {depth}"))?;
        let visual = screen
            .allowed_depths
            .iter()
            .flat_map(|d| d.visuals.iter())
            .find(|v| v.visual_id == screen.root_visual)
            .ok_or("the root visual is not listed")?;
        let format = Format {
            bits: u32::from(pixmap.bits_per_pixel),
            pad: u32::from(pixmap.scanline_pad),
            msb: setup.image_byte_order == ImageOrder::MSB_FIRST,
            masks: [visual.red_mask, visual.green_mask, visual.blue_mask],
        };
        if !matches!(format.bits, 16 | 24 | 32) || format.masks.contains(&0) {
            return Err(format!(
                "depth {depth} ({} bits per pixel, masks {:x?}) is not true colour",
                format.bits, format.masks
            ));
        }
        Ok(format)
    }

    /// Bytes per row of a `width`-pixel image.
    fn stride(self, width: u32) -> usize {
        let bits = width as usize * self.bits as usize;
        let pad = self.pad.max(8) as usize;
        bits.div_ceil(pad) * pad / 8
    }

    /// `data` (a `width`x`height` image in this format) as RGB.
    pub(crate) fn to_rgb(self, data: &[u8], width: u32, height: u32) -> Result<Vec<u8>, String> {
        let stride = self.stride(width);
        let (w, h) = (width as usize, height as usize);
        if data.len() < stride * h {
            return Err(format!(
                "the image has {} bytes; {width}x{height} needs {}",
                data.len(),
                stride * h
            ));
        }
        let mut out = Vec::with_capacity(w * h * 3);
        let bytes = (self.bits / 8) as usize;
        // The common case: 32 bits, least significant byte first, BGRX.
        if self.bits == 32 && !self.msb && self.masks == [0xff_0000, 0xff00, 0xff] {
            for row in data.chunks(stride).take(h) {
                for px in row[..w * 4].chunks_exact(4) {
                    out.extend_from_slice(&[px[2], px[1], px[0]]);
                }
            }
            return Ok(out);
        }
        let channels = self.masks.map(Channel::of);
        for row in data.chunks(stride).take(h) {
            for px in row[..w * bytes].chunks_exact(bytes) {
                let mut value = 0u32;
                if self.msb {
                    for b in px {
                        value = value << 8 | u32::from(*b);
                    }
                } else {
                    for b in px.iter().rev() {
                        value = value << 8 | u32::from(*b);
                    }
                }
                out.extend(channels.iter().map(|c| c.get(value)));
            }
        }
        Ok(out)
    }
}

/// One colour channel of a pixel value.
#[derive(Debug, Clone, Copy)]
struct Channel {
    shift: u32,
    max: u32,
}

impl Channel {
    fn of(mask: u32) -> Channel {
        let shift = mask.trailing_zeros();
        Channel {
            shift,
            max: mask >> shift,
        }
    }

    fn get(&self, value: u32) -> u8 {
        let v = (value >> self.shift) & self.max;
        u8::try_from(v * 255 / self.max.max(1)).unwrap_or(u8::MAX)
    }
}

/// RGB as a PNG (fast compression: the capture is what is timed).
pub(crate) fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header().map_err(|e| format!("png: {e}"))?;
    writer
        .write_image_data(rgb)
        .map_err(|e| format!("png: {e}"))?;
    writer.finish().map_err(|e| format!("png: {e}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixels_of_each_layout_become_rgb() {
        let bgrx = Format {
            bits: 32,
            pad: 32,
            msb: false,
            masks: [0xff_0000, 0xff00, 0xff],
        };
        // Two pixels, one row: red, then (1, 2, 3).
        let data = [0, 0, 255, 0, 3, 2, 1, 0];
        assert_eq!(bgrx.to_rgb(&data, 2, 1), Ok(vec![255, 0, 0, 1, 2, 3]));
        assert!(bgrx.to_rgb(&data[..4], 2, 1).is_err());

        let rgb565 = Format {
            bits: 16,
            pad: 32,
            msb: false,
            masks: [0xf800, 0x07e0, 0x001f],
        };
        // White, then pure blue; each row padded to 4 bytes.
        let data = [0xff, 0xff, 0x1f, 0x00];
        assert_eq!(
            rgb565.to_rgb(&data, 2, 1),
            Ok(vec![255, 255, 255, 0, 0, 255])
        );
        let one = [0x00, 0xf8, 0, 0, 0xe0, 0x07, 0, 0];
        assert_eq!(rgb565.to_rgb(&one, 1, 2), Ok(vec![255, 0, 0, 0, 255, 0]));
    }

    #[test]
    fn png_round_trips() {
        let rgb: Vec<u8> = (0..4 * 3 * 3).map(|i| i as u8).collect();
        let png = encode_png(&rgb, 4, 3).expect("encodes");
        let decoder = png::Decoder::new(std::io::Cursor::new(png));
        let mut reader = decoder.read_info().expect("a PNG");
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).expect("a frame");
        assert_eq!((info.width, info.height), (4, 3));
        assert_eq!(&buf[..info.buffer_size()], &rgb[..]);
    }
}
