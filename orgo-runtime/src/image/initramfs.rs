//! The initramfs: busybox as `/init`'s shell, the modules the root disk and
//! the agent's channels need, and a script that loads them, mounts the root
//! disk and hands over to the agent. Written as a `newc` cpio archive.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use crate::image::ImageError;

/// The `/init` script; `@MODULES@` becomes the module list, in load order.
const INIT: &str = r#"#!/bin/busybox sh
# orgo initramfs: load the virtio modules, mount the root disk, run the agent.
bb=/bin/busybox
$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mount -t devtmpfs devtmpfs /dev
for m in @MODULES@; do
    $bb insmod /lib/modules/$m.ko || echo "initramfs: cannot load $m"
done
root=/dev/vda
for arg in $($bb cat /proc/cmdline); do
    case "$arg" in root=/dev/*) root="${arg#root=}" ;; esac
done
i=0
while [ ! -b "$root" ] && [ $i -lt 500 ]; do $bb sleep 0.01; i=$((i+1)); done
if ! $bb mount -t ext4 -o rw "$root" /newroot; then
    echo "initramfs: cannot mount $root"; exec $bb sh
fi
$bb mount --move /dev /newroot/dev
$bb umount /proc /sys
exec $bb switch_root /newroot /sbin/orgo-agent
"#;

/// Builds the archive from busybox's bytes and the kernel's module tree
/// (`lib/modules/<release>`), with `wanted` modules and what they depend on.
pub(crate) fn build(
    busybox: &[u8],
    modules_dir: &Path,
    wanted: &[&str],
) -> Result<Vec<u8>, ImageError> {
    let index = index_modules(&modules_dir.join("kernel"))?;
    let mut order = Vec::new();
    for name in wanted {
        visit(name, &index, &mut order, 0)?;
    }
    let mut cpio = Cpio::default();
    for dir in ["bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"] {
        cpio.dir(dir);
    }
    cpio.char_device("dev/console", 0o600, 5, 1);
    cpio.file("bin/busybox", 0o755, busybox);
    for name in &order {
        let path = &index[name];
        let bytes = fs::read(path).map_err(|source| ImageError::Io {
            what: "read",
            path: path.display().to_string(),
            source,
        })?;
        cpio.file(&format!("lib/modules/{name}.ko"), 0o644, &bytes);
    }
    cpio.file(
        "init",
        0o755,
        INIT.replace("@MODULES@", &order.join(" ")).as_bytes(),
    );
    Ok(cpio.finish())
}

/// Every `.ko` under `dir`, by module name (file stem).
fn index_modules(dir: &Path) -> Result<BTreeMap<String, std::path::PathBuf>, ImageError> {
    let mut index = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = fs::read_dir(&d).map_err(|source| ImageError::Io {
            what: "list",
            path: d.display().to_string(),
            source,
        })?;
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "ko")
                && let Some(stem) = p.file_stem().and_then(|s| s.to_str())
            {
                index.insert(stem.to_string(), p.clone());
            }
        }
    }
    Ok(index)
}

/// Depth-first: dependencies before the module.
fn visit(
    name: &str,
    index: &BTreeMap<String, std::path::PathBuf>,
    order: &mut Vec<String>,
    depth: usize,
) -> Result<(), ImageError> {
    let err = |message: String| ImageError::Module {
        name: name.to_string(),
        message,
    };
    // Module names use `-` and `_` interchangeably.
    let key = [
        name.to_string(),
        name.replace('-', "_"),
        name.replace('_', "-"),
    ]
    .into_iter()
    .find(|k| index.contains_key(k))
    .ok_or_else(|| err("not in the kernel package (built in?)".into()))?;
    if order.contains(&key) {
        return Ok(());
    }
    if depth > 32 {
        return Err(err("dependency cycle".into()));
    }
    let bytes = fs::read(&index[&key]).map_err(|e| err(e.to_string()))?;
    for dep in modinfo_depends(&bytes).map_err(err)? {
        visit(&dep, index, order, depth + 1)?;
    }
    order.push(key);
    Ok(())
}

/// The `depends=` field of a module's `.modinfo` ELF section.
pub(crate) fn modinfo_depends(elf: &[u8]) -> Result<Vec<String>, String> {
    let section = elf_section(elf, ".modinfo")?;
    Ok(section
        .split(|b| *b == 0)
        .find_map(|field| field.strip_prefix(b"depends="))
        .map(|deps| {
            String::from_utf8_lossy(deps)
                .split(',')
                .filter(|d| !d.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default())
}

/// The bytes of a named section of a little-endian ELF64 file.
fn elf_section<'a>(elf: &'a [u8], wanted: &str) -> Result<&'a [u8], String> {
    let u16_at = |o: usize| -> Result<usize, String> {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
            .ok_or_else(|| "truncated ELF".to_string())
    };
    let u64_at = |o: usize| -> Result<usize, String> {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
            .ok_or_else(|| "truncated ELF".to_string())
    };
    if !elf.starts_with(b"\x7fELF\x02\x01") {
        return Err("not a little-endian ELF64 file".into());
    }
    let shoff = u64_at(0x28)?;
    let shentsize = u16_at(0x3a)?;
    let shnum = u16_at(0x3c)?;
    let shstrndx = u16_at(0x3e)?;
    let section = |i: usize| -> Result<(usize, usize, usize), String> {
        let h = shoff + i * shentsize;
        let name = elf
            .get(h..h + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
            .ok_or("truncated ELF")?;
        Ok((name, u64_at(h + 0x18)?, u64_at(h + 0x20)?))
    };
    let (_, str_off, str_size) = section(shstrndx)?;
    let names = elf
        .get(str_off..str_off + str_size)
        .ok_or("truncated ELF")?;
    for i in 0..shnum {
        let (name, off, size) = section(i)?;
        let n = names.get(name..).ok_or("bad section name")?;
        let n = &n[..n.iter().position(|b| *b == 0).unwrap_or(n.len())];
        if n == wanted.as_bytes() {
            return elf
                .get(off..off + size)
                .ok_or_else(|| "truncated ELF".into());
        }
    }
    Err(format!("no `{wanted}` section"))
}

/// A `newc` cpio archive, built in memory, every entry owned by root with
/// mtime 0 (the same inputs give the same bytes).
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            nlink,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.out.extend_from_slice(header.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, (0, 0), data);
    }

    fn char_device(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, 0o020000 | perm, (major, minor), &[]);
    }

    fn finish(mut self) -> Vec<u8> {
        self.ino = 0;
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_are_aligned_and_end_with_the_trailer() {
        let mut c = Cpio::default();
        c.dir("bin");
        c.file("init", 0o755, b"#!/bin/sh\n");
        let out = c.finish();
        assert!(out.starts_with(b"070701"));
        assert_eq!(out.len() % 4, 0);
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("init\0"));
        assert!(text.contains("TRAILER!!!\0"));
    }

    #[test]
    fn modinfo_of_a_non_elf_is_an_error() {
        assert!(modinfo_depends(b"not an elf").is_err());
    }
}
