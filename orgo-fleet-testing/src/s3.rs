//! An S3-compatible server for tests: this crate's `orgo-test-s3` binary
//! (s3s-fs) on 127.0.0.1, with its objects as files in a temporary directory.

use std::io::{BufRead as _, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a start may take before it is a failure.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The bucket every server holds.
const BUCKET: &str = "orgo-test";

/// A running `orgo-test-s3` with one bucket, stopped and deleted on drop.
///
/// Each server is its own process with its own port and directory, so
/// tests using one run in parallel. The binary is found next to the test
/// executable: `cargo test --workspace` builds it (a workspace member's
/// binaries are built for its tests), as does
/// `cargo build -p orgo-fleet-testing --bin orgo-test-s3`; a test run of
/// another package alone (`cargo test -p orgo-fleet`) needs that build
/// first. `ORGO_TEST_S3_BIN` names another binary.
#[derive(Debug)]
pub struct S3Server {
    binary: PathBuf,
    dir: tempfile::TempDir,
    root: PathBuf,
    port: u16,
    access_key: String,
    secret_key: String,
    child: Option<Child>,
}

impl S3Server {
    /// Starts a server on a free port with an empty bucket.
    ///
    /// # Panics
    ///
    /// If the binary is missing (saying how to build it) or does not start.
    pub fn start() -> S3Server {
        let binary = binary();
        let dir = tempfile::Builder::new()
            .prefix("orgo-test-s3-")
            .tempdir()
            .expect("a temporary directory for the S3 server");
        let root = dir.path().join("data").join(BUCKET);
        std::fs::create_dir_all(&root).expect("the bucket's directory is created");
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        let mut server = S3Server {
            binary,
            dir,
            root,
            port: 0,
            access_key: "orgo-test-access-key".to_owned(),
            // Distinctive, so a test can look for it in messages.
            secret_key: format!("orgo-test-secret-{}-{nanos:x}", std::process::id()),
            child: None,
        };
        server.spawn();
        server
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        BUCKET
    }

    /// The access key the server accepts.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// The secret key of [`Self::access_key`].
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// The bucket's directory: object `a/b` is the file `a/b` under it (so
    /// a test can damage a stored object).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Stops the server (an outage); its data stays for [`Self::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Already exited is fine: the point is that it is not running.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, with the same data.
    ///
    /// # Panics
    ///
    /// If it does not start.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the process on `self.port` (0: a free one) and waits for it to
    /// listen.
    fn spawn(&mut self) {
        let mut child = Command::new(&self.binary)
            .arg("--root")
            .arg(self.data())
            .arg("--port")
            .arg(self.port.to_string())
            .env("ORGO_TEST_S3_ACCESS_KEY", &self.access_key)
            .env("ORGO_TEST_S3_SECRET_KEY", &self.secret_key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", self.binary.display()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (send, receive) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = send.send(lines.next());
            // Keep reading so that the server never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match receive.recv_timeout(START_TIMEOUT) {
            Ok(Some(Ok(line))) => line,
            outcome => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`{}` did not print its port within {START_TIMEOUT:?} ({outcome:?}); \
                     its stderr is above",
                    self.binary.display()
                );
            }
        };
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("`orgo-test-s3` printed `{line}`, not a port"));
        // It prints the port once it listens; check that it accepts.
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), START_TIMEOUT)
            .unwrap_or_else(|e| panic!("`orgo-test-s3` on port {port} does not accept: {e}"));
        self.port = port;
        self.child = Some(child);
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `orgo-test-s3` binary: `ORGO_TEST_S3_BIN`, else next to the running
/// executable (or one directory up, from `target/<profile>/deps`).
fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("ORGO_TEST_S3_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the path of the running executable");
    let name = format!("orgo-test-s3{}", std::env::consts::EXE_SUFFIX);
    let mut dir = exe.parent();
    while let Some(candidate) = dir {
        let path = candidate.join(&name);
        if path.is_file() {
            return path;
        }
        if candidate.file_name().is_some_and(|n| n != "deps") {
            break;
        }
        dir = candidate.parent();
    }
    panic!(
        "the S3 test server `{name}` is not built next to `{}`: run \
         `cargo build -p orgo-fleet-testing --bin orgo-test-s3` (or `cargo test --workspace`, \
         which builds it)",
        exe.display()
    );
}
