//! A PostgreSQL server of its own: `initdb` and `postgres` from Debian's
//! PostgreSQL, on 127.0.0.1, in a temporary directory.

use std::fmt;
use std::fs::{self, File};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The superuser `initdb` creates.
const USER: &str = "orgo";

/// How long the server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the server may take to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A PostgreSQL server on 127.0.0.1 with its data in a temporary directory,
/// stopped and removed on drop. Each is a server of its own, so tests may
/// run in parallel.
///
/// Run as root (as the tests are), `initdb` and the server run as the
/// `postgres` user that Debian's package creates, since PostgreSQL refuses
/// to run as root.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// Whom to run as (`postgres` when this process is root).
    run_as: Option<String>,
    port: u16,
    password: String,
    server: Option<Child>,
}

impl fmt::Debug for Postgres {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Postgres")
            .field("dir", &self.dir.path())
            .field("port", &self.port)
            .field("running", &self.server.is_some())
            .finish_non_exhaustive()
    }
}

impl Postgres {
    /// Creates a database cluster and starts its server; panics naming what
    /// is missing or the server's log if it does not start.
    pub fn start() -> Self {
        let bin = bin_dir();
        let run_as = (is_root()).then(|| "postgres".to_owned());
        let dir = tempfile::Builder::new()
            .prefix("orgo-postgres-")
            .tempdir()
            .expect("create a temporary directory for PostgreSQL");
        let mut postgres = Self {
            dir,
            bin,
            run_as,
            port: 0,
            password: password(),
            server: None,
        };
        postgres.init();
        // A port found free may be taken before the server binds it: try
        // another then.
        for attempt in 1.. {
            postgres.port = free_port();
            match postgres.launch() {
                Ok(()) => break,
                Err(log) if log.contains("could not bind") && attempt < 5 => {}
                Err(log) => panic!("PostgreSQL did not start:\n{log}"),
            }
        }
        postgres
    }

    /// The URL of the `postgres` database, with the superuser's name and
    /// password.
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// The password in [`Self::url`], for tests that check it is never shown.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates the database `name` and returns its URL.
    pub fn database(&self, name: &str) -> String {
        let output = Command::new(self.tool("createdb"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
            .arg(name)
            .env("PGPASSWORD", &self.password)
            .output()
            .expect("run PostgreSQL's createdb");
        assert!(
            output.status.success(),
            "createdb `{name}` failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        self.url_of(name)
    }

    /// Stops the server at once (`immediate`, as if the host died), keeping
    /// its data and port for [`Self::restart`].
    pub fn stop(&mut self) {
        let Some(mut server) = self.server.take() else {
            return;
        };
        // SIGQUIT: an immediate shutdown, which also ends every backend (a
        // SIGKILL would leave them holding the shared memory).
        let _ = Command::new("kill")
            .args(["-QUIT", &server.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while server.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = server.kill();
                let _ = server.wait();
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again after [`Self::stop`], on the same port with
    /// the same data; panics with its log if it does not start.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(log) = self.launch() {
            panic!("PostgreSQL did not restart:\n{log}");
        }
    }

    fn url_of(&self, database: &str) -> String {
        format!(
            "postgres://{USER}:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn tool(&self, name: &str) -> PathBuf {
        let path = self.bin.join(name);
        if path.exists() { path } else { name.into() }
    }

    /// A command running `tool` as the server's user.
    fn command(&self, tool: &str) -> Command {
        let program = self.tool(tool);
        match &self.run_as {
            Some(user) => {
                let mut command = Command::new("setpriv");
                command
                    .arg(format!("--reuid={user}"))
                    .arg(format!("--regid={user}"))
                    .arg("--init-groups")
                    .arg(program);
                command
            }
            None => Command::new(program),
        }
    }

    /// `initdb`, with password authentication for the superuser.
    fn init(&self) {
        let pwfile = self.dir.path().join("pwfile");
        fs::write(&pwfile, format!("{}\n", self.password)).expect("write the password file");
        let socket = self.dir.path().join("socket");
        fs::create_dir(&socket).expect("create the socket directory");
        if let Some(user) = &self.run_as {
            let (uid, gid) = user_ids(user);
            for path in [self.dir.path(), &pwfile, &socket] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .unwrap_or_else(|e| panic!("chown `{}` to `{user}`: {e}", path.display()));
            }
        }
        let output = self
            .command("initdb")
            .arg("-D")
            .arg(self.data())
            .args(["-U", USER, "--auth=scram-sha-256", "-E", "UTF8"])
            .args(["--locale=C", "--no-sync", "--no-instructions"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("run PostgreSQL's initdb");
        assert!(
            output.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Starts the server and waits until it accepts connections; `Err` with
    /// its log if it exits or does not answer in time.
    fn launch(&mut self) -> Result<(), String> {
        let log = File::create(self.log()).expect("create the server's log");
        let server = self
            .command("postgres")
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-k")
            .arg(self.dir.path().join("socket"))
            // A test server: surviving the host's crash is not the point,
            // speed is. Commits stay synchronous, so that they survive the
            // server's own crash (`stop`).
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=200"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log's handle"))
            .stderr(log)
            .spawn()
            .expect("run PostgreSQL's postgres");
        self.server = Some(server);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .server
                .as_mut()
                .and_then(|server| server.try_wait().ok().flatten())
            {
                self.server = None;
                return Err(format!("it exited with {status}:\n{}", self.log_text()));
            }
            if self.is_ready() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!(
                    "it did not accept connections within {START_TIMEOUT:?}:\n{}",
                    self.log_text()
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn is_ready(&self) -> bool {
        Command::new(self.tool("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", USER, "-d", "postgres"])
            .status()
            .expect("run PostgreSQL's pg_isready")
            .success()
    }

    fn log_text(&self) -> String {
        fs::read_to_string(self.log()).unwrap_or_else(|e| format!("(no log: {e})"))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        // The temporary directory removes itself.
    }
}

/// `/usr/lib/postgresql/<highest version>/bin` (Debian), else the
/// directory of `initdb` on `PATH`.
fn bin_dir() -> PathBuf {
    let debian = Path::new("/usr/lib/postgresql");
    let highest = fs::read_dir(debian).ok().and_then(|entries| {
        entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let version: u32 = entry.file_name().to_str()?.parse().ok()?;
                let bin = entry.path().join("bin");
                bin.join("initdb").exists().then_some((version, bin))
            })
            .max_by_key(|(version, _)| *version)
    });
    if let Some((_, bin)) = highest {
        return bin;
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|dir| dir.join("initdb").exists() && dir.join("postgres").exists())
    });
    on_path.unwrap_or_else(|| {
        panic!(
            "PostgreSQL's initdb not found under /usr/lib/postgresql/*/bin nor on PATH: \
             apt-get install postgresql"
        )
    })
}

/// Whether this process runs as root (the owner of `/proc/self`).
fn is_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}

/// The uid and gid of `user`, from `/etc/passwd`.
fn user_ids(user: &str) -> (u32, u32) {
    let passwd = fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&user))
        .and_then(|fields| Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?)))
        .unwrap_or_else(|| {
            panic!(
                "no `{user}` user to run PostgreSQL as (initdb refuses root): \
                 apt-get install postgresql creates it"
            )
        })
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("bind a free port on 127.0.0.1")
        .port()
}

/// A password unlikely to appear anywhere by chance.
fn password() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("pw{:x}{:08x}", std::process::id(), nanos)
}
