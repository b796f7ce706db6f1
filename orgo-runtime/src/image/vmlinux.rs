//! The ELF kernel inside a bzImage, as Linux's `scripts/extract-vmlinux`
//! finds it: at each LZ4 legacy-frame magic, decompress and keep the first
//! result that is an ELF file.

/// The LZ4 legacy frame magic (`lz4 -l`, what the kernel's build uses).
const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];

/// A legacy frame's blocks decompress to at most 8 MiB each.
const BLOCK_BYTES: usize = 8 << 20;

/// The largest vmlinux accepted (512 MiB).
const MAX_VMLINUX_BYTES: usize = 512 << 20;

/// Extracts the ELF `vmlinux` from a compressed `vmlinuz`.
pub fn extract_vmlinux(vmlinuz: &[u8]) -> Result<Vec<u8>, String> {
    let mut from = 0;
    while let Some(at) = find(&vmlinuz[from..], &LZ4_LEGACY_MAGIC) {
        let start = from + at;
        if let Some(elf) = decompress_legacy(&vmlinuz[start + 4..])
            && elf.starts_with(b"\x7fELF")
        {
            return Ok(elf);
        }
        from = start + 1;
    }
    Err("no LZ4 payload that decompresses to an ELF file".into())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Decompresses legacy-frame blocks (`u32` little-endian length, then the
/// block) until the data stops looking like blocks.
fn decompress_legacy(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut block = vec![0u8; BLOCK_BYTES];
    let bound = lz4_flex::block::get_maximum_output_size(BLOCK_BYTES);
    while data.len() >= 4 {
        let len = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if len.to_le_bytes()[..4] == LZ4_LEGACY_MAGIC {
            data = &data[4..]; // a concatenated frame
            continue;
        }
        if len == 0 || len > bound || len > data.len() - 4 {
            break;
        }
        match lz4_flex::block::decompress_into(&data[4..4 + len], &mut block) {
            Ok(n) => out.extend_from_slice(&block[..n]),
            Err(_) => break,
        }
        if out.len() > MAX_VMLINUX_BYTES {
            return None;
        }
        data = &data[4 + len..];
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_elf_payload_after_a_false_magic() {
        let mut elf = b"\x7fELF".to_vec();
        elf.extend((0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()));
        let block = lz4_flex::block::compress(&elf);
        let mut image = b"setup code".to_vec();
        image.extend(LZ4_LEGACY_MAGIC); // a magic followed by junk
        image.extend([0xff; 8]);
        image.extend(LZ4_LEGACY_MAGIC);
        image.extend((block.len() as u32).to_le_bytes());
        image.extend(&block);
        image.extend(1234u32.to_le_bytes()); // the kernel's trailing size field
        assert_eq!(extract_vmlinux(&image).unwrap(), elf);
        assert!(extract_vmlinux(b"no payload here").is_err());
    }
}
