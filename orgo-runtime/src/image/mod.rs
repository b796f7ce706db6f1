//! The base image: kernel, initramfs and root disk, built from Debian
//! packages and the agent binary, content-addressed by its recipe.
//!
//! - Kernel: Debian's `linux-image-*-cloud-amd64`, fetched with `apt-get
//!   download` and unpacked with `dpkg-deb -x`. `vmlinuz` is kept for QEMU;
//!   the ELF `vmlinux` (for Cloud Hypervisor's PVH boot) is extracted from its
//!   LZ4 payload as Linux's `scripts/extract-vmlinux` does.
//! - Initramfs: busybox (Debian's `busybox-static`) as `/init`, the virtio
//!   and vsock modules with their dependencies (read from each module's
//!   `.modinfo`), loaded in order; it mounts the root disk and
//!   `switch_root`s to `/sbin/orgo-agent`. Written as a `newc` cpio here.
//! - Root disk: `mmdebstrap` minbase of the suite plus the recipe's
//!   packages, user `orgo` (uid 1000), the agent at `/sbin/orgo-agent`,
//!   scrubbed (apt caches and lists, logs, machine-id), then an ext4 image
//!   by `mkfs.ext4 -d` (no loop mounts).
//!
//! A build goes to a temporary directory beside the output, renamed into
//! place whole: `<out>/<recipe hex digest>/` either holds a complete image or
//! does not exist. The same recipe is built once.

mod desktop;
mod initramfs;
mod vmlinux;

pub use desktop::{DESKTOP_BUILDER_VERSION, DESKTOP_PACKAGES, DesktopImageRecipe, build_desktop};
pub use vmlinux::extract_vmlinux;

use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use orgo_snapshot::{Version, VersionedError, VersionedFormat};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Bumped whenever the builder changes what a recipe produces.
pub const BUILDER_VERSION: u32 = 1;

/// The version of `manifest.json`.
pub const MANIFEST_VERSION: u32 = 1;

/// The largest `manifest.json` read back (64 KiB).
pub const MAX_MANIFEST_BYTES: u64 = 64 << 10;

/// The format of `manifest.json`: a [`BaseImage`] with `version`
/// [`MANIFEST_VERSION`].0, at most [`MAX_MANIFEST_BYTES`].
const MANIFEST: VersionedFormat = VersionedFormat::new(
    "version",
    Version::new(MANIFEST_VERSION, 0),
    MAX_MANIFEST_BYTES,
);

/// Modules the initramfs loads (with their dependencies).
pub const INITRAMFS_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_console",
    "virtio-rng",
    "vmw_vsock_virtio_transport",
];

/// The root file system's size (sparse); a template's disk grows it.
pub(crate) const ROOTFS_MIB: u64 = 2048;

/// The kernel command line the image expects, before any `orgo.ip=`.
pub const KERNEL_CMDLINE: &str =
    "console=ttyS0 root=/dev/vda rw quiet panic=-1 memhp_default_state=online";

/// A failed image build.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// A file operation failed.
    #[error("cannot {what} `{path}`")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A build tool could not be started.
    #[error("cannot run `{tool}` (is it installed?)")]
    Spawn {
        /// The program.
        tool: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A build tool failed.
    #[error("`{command}` failed with {status}: {stderr}")]
    Tool {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The end of its stderr.
        stderr: String,
    },
    /// The kernel package is not what was expected.
    #[error("kernel package: {0}")]
    Kernel(String),
    /// A Debian package cannot be resolved or fetched.
    #[error("package `{package}`: {message}")]
    Package {
        /// The package.
        package: String,
        /// What is wrong.
        message: String,
    },
    /// A module or its dependency is missing or unreadable.
    #[error("kernel module `{name}`: {message}")]
    Module {
        /// Module name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The agent binary is not the one the recipe names.
    #[error("agent `{path}` has digest `{actual}`, the recipe names `{expected}`")]
    AgentMismatch {
        /// The binary.
        path: String,
        /// Its digest.
        actual: String,
        /// The recipe's.
        expected: String,
    },
    /// A cached image's manifest is too large, not JSON, of another format
    /// version, or malformed.
    #[error("bad base-image manifest")]
    Manifest(#[source] VersionedError),
    /// A cached image's manifest names another recipe than its directory.
    #[error("bad manifest `{path}`: its recipe is not the one its directory names")]
    ManifestRecipe {
        /// The manifest.
        path: String,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ImageError {
    let path = path.display().to_string();
    move |source| ImageError::Io { what, path, source }
}

/// Everything a base image is made from. Its [`digest`](Self::digest) names
/// the image: equal recipes give equal digests, and an image is built once
/// per digest.
///
/// Debian packages are named by suite and mirror, not pinned one by one: two
/// builds of one recipe on different days may differ in point releases. The
/// kernel and busybox versions are pinned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseImageRecipe {
    /// [`BUILDER_VERSION`].
    pub builder: u32,
    /// Debian suite (`bookworm`).
    pub suite: String,
    /// Debian mirror.
    pub mirror: String,
    /// mmdebstrap variant (`minbase`).
    pub variant: String,
    /// Packages beyond the variant's.
    pub packages: Vec<String>,
    /// Versioned kernel package (`linux-image-6.1.0-56-cloud-amd64`).
    pub kernel_package: String,
    /// Its version.
    pub kernel_version: String,
    /// busybox-static version, for the initramfs.
    pub busybox_version: String,
    /// SHA-256 (hex) of the agent binary.
    pub agent_sha256: String,
    /// Size of the root disk image in MiB (sparse).
    pub disk_mib: u64,
}

/// The packages the root file system has beyond minbase.
pub const DEFAULT_PACKAGES: &[&str] = &[
    "bash",
    "tmux",
    "ca-certificates",
    "curl",
    "iproute2",
    "procps",
    "passwd",
];

impl BaseImageRecipe {
    /// The default recipe for `agent`: bookworm minbase plus
    /// [`DEFAULT_PACKAGES`], the kernel that `linux-image-cloud-amd64` points
    /// at and busybox-static, at the versions this host's apt would fetch.
    pub fn resolve(agent: &Path) -> Result<BaseImageRecipe, ImageError> {
        let depends =
            run_capture(Command::new("apt-cache").args(["depends", "linux-image-cloud-amd64"]))?;
        let kernel_package = depends
            .lines()
            .find_map(|l| l.trim().strip_prefix("Depends: "))
            .filter(|p| p.starts_with("linux-image-"))
            .ok_or_else(|| ImageError::Package {
                package: "linux-image-cloud-amd64".into(),
                message: "depends on no `linux-image-` package".into(),
            })?
            .to_string();
        Ok(BaseImageRecipe {
            builder: BUILDER_VERSION,
            suite: "bookworm".into(),
            mirror: "http://deb.debian.org/debian".into(),
            variant: "minbase".into(),
            packages: DEFAULT_PACKAGES.iter().map(|p| p.to_string()).collect(),
            kernel_version: candidate_version(&kernel_package)?,
            kernel_package,
            busybox_version: candidate_version("busybox-static")?,
            agent_sha256: sha256_file(agent)?,
            disk_mib: ROOTFS_MIB,
        })
    }

    /// The canonical JSON of the recipe (fields in declaration order).
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(self).expect("a recipe always serializes")
    }

    /// `sha256:<hex>` of [`canonical_json`](Self::canonical_json).
    pub fn digest(&self) -> String {
        format!("sha256:{}", self.digest_hex())
    }

    fn digest_hex(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_json().as_bytes()))
    }
}

/// A built base image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseImage {
    /// The directory that holds it.
    #[serde(skip)]
    pub dir: PathBuf,
    /// The recipe.
    pub recipe: BaseImageRecipe,
    /// Its digest.
    pub recipe_digest: String,
    /// The kernel release (`6.1.0-56-cloud-amd64`).
    pub kernel_release: String,
    /// SHA-256 (hex) of each file, by file name.
    pub files: std::collections::BTreeMap<String, String>,
}

impl BaseImage {
    /// The compressed kernel (QEMU's `-kernel`).
    pub fn vmlinuz(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }

    /// The ELF kernel (Cloud Hypervisor, PVH).
    pub fn vmlinux(&self) -> PathBuf {
        self.dir.join("vmlinux")
    }

    /// The initramfs.
    pub fn initrd(&self) -> PathBuf {
        self.dir.join("initrd.cpio")
    }

    /// The root disk (raw ext4). Never write it: boot from a copy-on-write layer.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs.ext4")
    }
}

/// Where a build reports what it is doing.
pub trait Progress {
    /// One step begins.
    fn step(&mut self, message: &str);
}

impl<F: FnMut(&str)> Progress for F {
    fn step(&mut self, message: &str) {
        self(message)
    }
}

/// Loads the image of `recipe` from `out_dir` if it was built.
pub fn cached_base(
    recipe: &BaseImageRecipe,
    out_dir: &Path,
) -> Result<Option<BaseImage>, ImageError> {
    let dir = out_dir.join(recipe.digest_hex());
    let path = dir.join("manifest.json");
    let image: BaseImage = match MANIFEST.read_file(&path) {
        Ok(image) => image,
        Err(VersionedError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(None);
        }
        Err(VersionedError::Io { source, .. }) => return Err(io_err("read", &path)(source)),
        Err(e) => return Err(ImageError::Manifest(e)),
    };
    if image.recipe != *recipe {
        return Err(ImageError::ManifestRecipe {
            path: path.display().to_string(),
        });
    }
    Ok(Some(BaseImage { dir, ..image }))
}

/// Builds the base image of `recipe` into `out_dir/<digest hex>/`, or returns
/// the one already there. `agent` must be the binary whose digest the recipe
/// names (a static build of `orgo-agent`). Runs as root (mmdebstrap's root
/// mode and `chroot`).
pub fn build_base(
    recipe: &BaseImageRecipe,
    agent: &Path,
    out_dir: &Path,
    progress: &mut dyn Progress,
) -> Result<BaseImage, ImageError> {
    if let Some(image) = cached_base(recipe, out_dir)? {
        progress.step(&format!("base image {} is built", recipe.digest()));
        return Ok(image);
    }
    let agent_digest = sha256_file(agent)?;
    if agent_digest != recipe.agent_sha256 {
        return Err(ImageError::AgentMismatch {
            path: agent.display().to_string(),
            actual: agent_digest,
            expected: recipe.agent_sha256.clone(),
        });
    }
    fs::create_dir_all(out_dir).map_err(io_err("create", out_dir))?;
    let hex = recipe.digest_hex();
    let tmp = out_dir.join(format!(".tmp-{hex}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(io_err("create", &tmp))?;
    let result = build_into(recipe, agent, &tmp, progress);
    let image = match result {
        Ok(image) => image,
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    let dir = out_dir.join(&hex);
    match fs::rename(&tmp, &dir) {
        Ok(()) => {}
        // Another build of the same recipe won the race: use its image.
        Err(_) if dir.join("manifest.json").exists() => {
            let _ = fs::remove_dir_all(&tmp);
        }
        Err(e) => return Err(io_err("rename into", &dir)(e)),
    }
    progress.step(&format!("base image {} built", recipe.digest()));
    Ok(BaseImage { dir, ..image })
}

fn build_into(
    recipe: &BaseImageRecipe,
    agent: &Path,
    tmp: &Path,
    progress: &mut dyn Progress,
) -> Result<BaseImage, ImageError> {
    let downloads = tmp.join("downloads");
    fs::create_dir_all(&downloads).map_err(io_err("create", &downloads))?;

    progress.step(&format!(
        "kernel: {}={}",
        recipe.kernel_package, recipe.kernel_version
    ));
    let kernel_tree = tmp.join("kernel");
    let deb = apt_download(&recipe.kernel_package, &recipe.kernel_version, &downloads)?;
    unpack_deb(&deb, &kernel_tree)?;
    let release = recipe
        .kernel_package
        .strip_prefix("linux-image-")
        .ok_or_else(|| {
            ImageError::Kernel(format!(
                "`{}` is not a linux-image package",
                recipe.kernel_package
            ))
        })?
        .to_string();
    let vmlinuz_src = kernel_tree.join(format!("boot/vmlinuz-{release}"));
    let vmlinuz = fs::read(&vmlinuz_src).map_err(io_err("read", &vmlinuz_src))?;
    fs::write(tmp.join("vmlinuz"), &vmlinuz).map_err(io_err("write", &tmp.join("vmlinuz")))?;
    progress.step("kernel: extracting vmlinux from the LZ4 payload");
    let vmlinux = vmlinux::extract_vmlinux(&vmlinuz).map_err(ImageError::Kernel)?;
    fs::write(tmp.join("vmlinux"), vmlinux).map_err(io_err("write", &tmp.join("vmlinux")))?;

    progress.step(&format!(
        "initramfs: busybox-static={}",
        recipe.busybox_version
    ));
    let busybox_deb = apt_download("busybox-static", &recipe.busybox_version, &downloads)?;
    let busybox_tree = tmp.join("busybox");
    unpack_deb(&busybox_deb, &busybox_tree)?;
    let busybox = fs::read(busybox_tree.join("bin/busybox"))
        .map_err(io_err("read", &busybox_tree.join("bin/busybox")))?;
    let modules_dir = kernel_tree.join(format!("lib/modules/{release}"));
    let initrd = initramfs::build(&busybox, &modules_dir, INITRAMFS_MODULES)?;
    fs::write(tmp.join("initrd.cpio"), initrd)
        .map_err(io_err("write", &tmp.join("initrd.cpio")))?;
    let _ = fs::remove_dir_all(&kernel_tree);
    let _ = fs::remove_dir_all(&busybox_tree);
    let _ = fs::remove_dir_all(&downloads);

    build_rootfs(recipe, &recipe.packages, agent, tmp, progress)?;

    progress.step("digests");
    let mut files = std::collections::BTreeMap::new();
    for name in ["vmlinuz", "vmlinux", "initrd.cpio", "rootfs.ext4"] {
        files.insert(name.to_string(), sha256_file(&tmp.join(name))?);
    }
    let image = BaseImage {
        dir: tmp.to_path_buf(),
        recipe: recipe.clone(),
        recipe_digest: recipe.digest(),
        kernel_release: release,
        files,
    };
    let path = tmp.join("manifest.json");
    let json = serde_json::to_vec_pretty(&MANIFEST.to_value(&image))
        .expect("a manifest always serializes");
    fs::write(&path, json).map_err(io_err("write", &path))?;
    Ok(image)
}

/// The root disk `tmp/rootfs.ext4`: `mmdebstrap` of `recipe`'s suite and
/// variant with `packages`, user `orgo`, the agent, scrubbed, as ext4.
fn build_rootfs(
    recipe: &BaseImageRecipe,
    packages: &[String],
    agent: &Path,
    tmp: &Path,
    progress: &mut dyn Progress,
) -> Result<(), ImageError> {
    progress.step(&format!(
        "root file system: mmdebstrap {} {} +{}",
        recipe.variant,
        recipe.suite,
        packages.join(",")
    ));
    let tree = tmp.join("tree");
    let mut mm = Command::new("mmdebstrap");
    mm.arg("--mode=root")
        .arg(format!("--variant={}", recipe.variant))
        .arg(format!("--include={}", packages.join(",")))
        .arg("--customize-hook=chroot \"$1\" useradd --create-home --shell /bin/bash --uid 1000 --user-group orgo")
        .args(["--quiet", &recipe.suite])
        .arg(&tree)
        .arg(&recipe.mirror);
    run(&mut mm)?;
    let sbin_agent = tree.join("sbin/orgo-agent");
    fs::copy(agent, &sbin_agent).map_err(io_err("copy the agent to", &sbin_agent))?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&sbin_agent, fs::Permissions::from_mode(0o755))
        .map_err(io_err("chmod", &sbin_agent))?;
    progress.step("root file system: scrubbing caches, logs and machine-id");
    scrub(&tree)?;

    progress.step(&format!(
        "root disk: mkfs.ext4 -d ({} MiB, sparse)",
        recipe.disk_mib
    ));
    let rootfs = tmp.join("rootfs.ext4");
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "orgo-root", "-E", "root_owner=0:0", "-d"])
        .arg(&tree)
        .arg(&rootfs)
        .arg(format!("{}M", recipe.disk_mib)))?;
    fs::remove_dir_all(&tree).map_err(io_err("remove", &tree))?;
    Ok(())
}

/// What no image should carry: apt's caches and lists, logs, the machine-id
/// (written fresh at first boot), the build host's resolv.conf.
fn scrub(tree: &Path) -> Result<(), ImageError> {
    for dir in [
        "var/cache/apt",
        "var/lib/apt/lists",
        "var/log",
        "tmp",
        "var/tmp",
    ] {
        let path = tree.join(dir);
        let Ok(entries) = fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            let p = entry.path();
            let meta = entry.metadata().map_err(io_err("stat", &p))?;
            if meta.is_dir() {
                if dir == "var/log" {
                    // Keep the directories services expect, empty.
                    scrub_files(&p)?;
                } else if dir != "var/lib/apt/lists" || p.file_name() != Some("partial".as_ref()) {
                    fs::remove_dir_all(&p).map_err(io_err("remove", &p))?;
                }
            } else {
                fs::remove_file(&p).map_err(io_err("remove", &p))?;
            }
        }
    }
    for (file, content) in [
        ("etc/machine-id", ""),
        ("etc/hostname", "orgo\n"),
        (
            "etc/hosts",
            "127.0.0.1\tlocalhost\n127.0.1.1\torgo\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        ),
        ("etc/resolv.conf", ""),
    ] {
        let path = tree.join(file);
        let _ = fs::remove_file(&path);
        fs::write(&path, content).map_err(io_err("write", &path))?;
    }
    let _ = fs::remove_file(tree.join("var/lib/dbus/machine-id"));
    Ok(())
}

fn scrub_files(dir: &Path) -> Result<(), ImageError> {
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))?.flatten() {
        let p = entry.path();
        if entry.metadata().map_err(io_err("stat", &p))?.is_dir() {
            scrub_files(&p)?;
        } else {
            fs::remove_file(&p).map_err(io_err("remove", &p))?;
        }
    }
    Ok(())
}

fn candidate_version(package: &str) -> Result<String, ImageError> {
    let policy = run_capture(Command::new("apt-cache").args(["policy", package]))?;
    policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate: "))
        .filter(|v| *v != "(none)")
        .map(str::to_string)
        .ok_or_else(|| ImageError::Package {
            package: package.to_string(),
            message: "apt knows no candidate version (run `apt-get update`)".into(),
        })
}

fn apt_download(package: &str, version: &str, dir: &Path) -> Result<PathBuf, ImageError> {
    run(Command::new("apt-get")
        .args(["download", "-q", &format!("{package}={version}")])
        .current_dir(dir))?;
    find_deb(package, dir)
}

/// The `.deb` of `package` that `apt-get download` left in `dir`.
fn find_deb(package: &str, dir: &Path) -> Result<PathBuf, ImageError> {
    let deb = fs::read_dir(dir)
        .map_err(io_err("list", dir))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
        });
    deb.ok_or_else(|| ImageError::Package {
        package: package.to_string(),
        message: "`apt-get download` left no `.deb`".into(),
    })
}

fn unpack_deb(deb: &Path, into: &Path) -> Result<(), ImageError> {
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(into))
}

fn describe(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        let _ = write!(line, " {}", arg.to_string_lossy());
    }
    line
}

fn run(cmd: &mut Command) -> Result<(), ImageError> {
    run_capture(cmd).map(drop)
}

fn run_capture(cmd: &mut Command) -> Result<String, ImageError> {
    let output = cmd.output().map_err(|source| ImageError::Spawn {
        tool: cmd.get_program().to_string_lossy().into_owned(),
        source,
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: String = stderr
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        return Err(ImageError::Tool {
            command: describe(cmd),
            status: output.status,
            stderr: tail,
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// SHA-256 (hex) of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String, ImageError> {
    let mut file = fs::File::open(path).map_err(io_err("open", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io_err("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_deb_names_its_package() {
        let dir = std::env::temp_dir().join(format!("orgo-find-deb-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("a scratch directory");
        fs::write(
            dir.join("linux-image-6.1.0-1-cloud-amd64_6.1.1_amd64.deb"),
            "",
        )
        .expect("a stand-in kernel .deb");
        let found = find_deb("linux-image-6.1.0-1-cloud-amd64", &dir);
        let missing = find_deb("busybox-static", &dir);
        let _ = fs::remove_dir_all(&dir);
        assert!(found.is_ok(), "{found:?}");
        match missing {
            Err(ImageError::Package { package, message }) => {
                assert_eq!(package, "busybox-static");
                assert!(message.contains(".deb"), "{message}");
            }
            other => panic!("expected a package error, got {other:?}"),
        }
    }

    #[test]
    fn an_unknown_package_has_no_candidate_and_is_named() {
        match candidate_version("orgo-no-such-package") {
            Err(ImageError::Package { package, .. }) => {
                assert_eq!(package, "orgo-no-such-package");
            }
            // No apt on this host: nothing to check.
            Err(ImageError::Spawn { .. }) => eprintln!("skipped: no `apt-cache`"),
            other => panic!("expected a package error, got {other:?}"),
        }
    }

    fn recipe() -> BaseImageRecipe {
        BaseImageRecipe {
            builder: BUILDER_VERSION,
            suite: "bookworm".into(),
            mirror: "http://deb.debian.org/debian".into(),
            variant: "minbase".into(),
            packages: vec!["bash".into()],
            kernel_package: "linux-image-6.1.0-1-cloud-amd64".into(),
            kernel_version: "6.1.1".into(),
            busybox_version: "1:1.35.0-4+b3".into(),
            agent_sha256: "00".repeat(32),
            disk_mib: ROOTFS_MIB,
        }
    }

    /// `manifest.json` is read by the versioned rule; a manifest written
    /// before it (`"version": 1`, the image's fields beside it) still reads.
    #[test]
    fn cached_manifests_are_read_by_the_version_rule() {
        let out = tempfile::tempdir().expect("a scratch directory");
        let recipe = recipe();
        let dir = out.path().join(recipe.digest_hex());
        fs::create_dir_all(&dir).expect("the image directory");
        let path = dir.join("manifest.json");
        assert!(
            cached_base(&recipe, out.path())
                .expect("no image")
                .is_none()
        );

        let mut written = serde_json::json!({
            "version": 1,
            "recipe": recipe,
            "recipe_digest": recipe.digest(),
            "kernel_release": "6.1.0-1-cloud-amd64",
            "files": {"vmlinuz": "ab"},
        });
        fs::write(&path, serde_json::to_vec_pretty(&written).expect("JSON")).expect("written");
        let image = cached_base(&recipe, out.path())
            .expect("reads")
            .expect("an image");
        assert_eq!(image.dir, dir);
        assert_eq!(image.kernel_release, "6.1.0-1-cloud-amd64");
        assert_eq!(
            serde_json::to_string_pretty(&MANIFEST.to_value(&image)).expect("JSON"),
            serde_json::to_string_pretty(&written).expect("JSON"),
            "written as before"
        );

        written["kernel_config"] = "x".into();
        fs::write(&path, serde_json::to_vec(&written).expect("JSON")).expect("written");
        match cached_base(&recipe, out.path()) {
            Err(ImageError::Manifest(VersionedError::UnknownField { field, .. })) => {
                assert_eq!(field, "kernel_config");
            }
            other => panic!("expected an unknown field, got {other:?}"),
        }
        written["version"] = 2.into();
        fs::write(&path, serde_json::to_vec(&written).expect("JSON")).expect("written");
        assert!(matches!(
            cached_base(&recipe, out.path()),
            Err(ImageError::Manifest(VersionedError::UnsupportedMajor {
                newer: true,
                ..
            }))
        ));

        let mut other = recipe.clone();
        other.disk_mib += 1;
        fs::write(
            &path,
            serde_json::to_vec(&MANIFEST.to_value(&BaseImage {
                recipe: other,
                ..image
            }))
            .expect("JSON"),
        )
        .expect("written");
        assert!(matches!(
            cached_base(&recipe, out.path()),
            Err(ImageError::ManifestRecipe { .. })
        ));
    }
}
