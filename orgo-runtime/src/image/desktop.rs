//! The desktop base image: a second recipe layered on the base image. It
//! names its base by the base recipe's digest and adds
//! [`DESKTOP_PACKAGES`]; its kernel and initramfs are the base image's (the
//! same blobs in the store), its root disk is the base's packages plus
//! these, from the same `mmdebstrap` of the same suite. Templates with a
//! desktop boot it; headless ones never see it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{BaseImageRecipe, ImageError, Progress, build_rootfs, io_err};

/// Bumped whenever what a desktop recipe produces changes.
pub const DESKTOP_BUILDER_VERSION: u32 = 1;

/// The desktop's Debian packages, beyond the base image's.
pub const DESKTOP_PACKAGES: &[&str] = &[
    // The X server that serves VNC itself (port 5900), and the fonts
    // X clients fall back on.
    "tigervnc-standalone-server",
    "xfonts-base",
    // A light window manager (click to focus).
    "openbox",
    // noVNC, served by websockify on port 6080.
    "novnc",
    "websockify",
    // The wallpaper (`hsetroot -fill`).
    "hsetroot",
    // A terminal and X's utilities (xev, xwininfo, xdpyinfo).
    "xterm",
    "x11-utils",
    // Streaming (`ffmpeg -f x11grab`), screenshots by a helper process
    // (`scrot`, for comparison), the sound server (`hardware.audio`).
    "ffmpeg",
    "scrot",
    "pulseaudio",
];

/// Everything a desktop image is made from: its base recipe and the
/// packages it adds. Its [`digest`](Self::digest) names the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesktopImageRecipe {
    /// [`DESKTOP_BUILDER_VERSION`].
    pub builder: u32,
    /// The base image recipe's digest (`sha256:...`).
    pub base: String,
    /// Packages beyond the base's.
    pub packages: Vec<String>,
}

impl DesktopImageRecipe {
    /// The desktop recipe over `base`.
    pub fn over(base: &BaseImageRecipe) -> DesktopImageRecipe {
        DesktopImageRecipe {
            builder: DESKTOP_BUILDER_VERSION,
            base: base.digest(),
            packages: DESKTOP_PACKAGES.iter().map(|p| p.to_string()).collect(),
        }
    }

    /// `sha256:<hex>` of its canonical JSON (fields in declaration order,
    /// under a `desktop` key, so that it never equals a base recipe's).
    pub fn digest(&self) -> String {
        let json = serde_json::json!({ "desktop": self });
        format!(
            "sha256:{}",
            hex::encode(Sha256::digest(json.to_string().as_bytes()))
        )
    }
}

/// Builds the desktop image of `recipe` over `base` (whose kernel, ELF
/// kernel and initramfs are `kernel_files`, by file name) into `dir`:
/// returns its files by name. Runs as root, as the base image's build does.
pub fn build_desktop(
    base: &BaseImageRecipe,
    recipe: &DesktopImageRecipe,
    kernel_files: &BTreeMap<String, PathBuf>,
    agent: &Path,
    dir: &Path,
    progress: &mut dyn Progress,
) -> Result<BTreeMap<String, PathBuf>, ImageError> {
    if recipe.base != base.digest() {
        return Err(ImageError::Package {
            package: "desktop image".into(),
            message: format!(
                "the recipe is over base `{}`, not `{}`",
                recipe.base,
                base.digest()
            ),
        });
    }
    fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    let mut files = BTreeMap::new();
    for (name, from) in kernel_files {
        let to = dir.join(name);
        fs::copy(from, &to).map_err(io_err("copy", from))?;
        files.insert(name.clone(), to);
    }
    let mut packages = base.packages.clone();
    packages.extend(recipe.packages.iter().cloned());
    build_rootfs(base, &packages, agent, dir, progress)?;
    files.insert("rootfs.ext4".into(), dir.join("rootfs.ext4"));
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_desktop_recipe_names_its_base_and_differs_from_it() {
        let base = BaseImageRecipe {
            builder: super::super::BUILDER_VERSION,
            suite: "bookworm".into(),
            mirror: "http://deb.debian.org/debian".into(),
            variant: "minbase".into(),
            packages: vec!["bash".into()],
            kernel_package: "linux-image-6.1.0-1-cloud-amd64".into(),
            kernel_version: "6.1.1".into(),
            busybox_version: "1:1.35.0-4+b3".into(),
            agent_sha256: "00".repeat(32),
            disk_mib: super::super::ROOTFS_MIB,
        };
        let desktop = DesktopImageRecipe::over(&base);
        assert_eq!(desktop.base, base.digest());
        assert_ne!(desktop.digest(), base.digest());
        let mut other = base.clone();
        other.agent_sha256 = "11".repeat(32);
        assert_ne!(DesktopImageRecipe::over(&other).digest(), desktop.digest());
        assert_eq!(DesktopImageRecipe::over(&base).digest(), desktop.digest());
    }
}
