//! `orgo-test-s3`: an S3-compatible server for tests (s3s-fs: each bucket a
//! directory of `--root`, each object a file), on 127.0.0.1 only.
//!
//! ```text
//! orgo-test-s3 --root DIR [--port N] [--access-key KEY --secret-key SECRET]
//! ```
//!
//! `--port 0` (the default) binds a free port; the first line on stdout is
//! the port bound. The keys default to `ORGO_TEST_S3_ACCESS_KEY` and
//! `ORGO_TEST_S3_SECRET_KEY`; without them every request is accepted
//! unsigned. It serves until killed.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;

/// The command line.
struct Args {
    root: PathBuf,
    port: u16,
    access_key: Option<String>,
    secret_key: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut root = None;
    let mut port = 0;
    let mut access_key = std::env::var("ORGO_TEST_S3_ACCESS_KEY").ok();
    let mut secret_key = std::env::var("ORGO_TEST_S3_SECRET_KEY").ok();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("`{arg}` needs a value"));
        match arg.as_str() {
            "--root" => root = Some(PathBuf::from(value()?)),
            "--port" => {
                let text = value()?;
                port = text
                    .parse()
                    .map_err(|_| format!("`--port {text}`: not a port number"))?;
            }
            "--access-key" => access_key = Some(value()?),
            "--secret-key" => secret_key = Some(value()?),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let root = root.ok_or("`--root DIR` is required")?;
    if access_key.is_some() != secret_key.is_some() {
        return Err("the access key and the secret key go together".to_owned());
    }
    Ok(Args {
        root,
        port,
        access_key,
        secret_key,
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!(
                "orgo-test-s3: {message}\nusage: orgo-test-s3 --root DIR [--port N] \
                 [--access-key KEY --secret-key SECRET]"
            );
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("orgo-test-s3: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> Result<(), String> {
    let fs = s3s_fs::FileSystem::new(&args.root)
        .map_err(|e| format!("root `{}`: {e:?}", args.root.display()))?;
    let mut service = S3ServiceBuilder::new(fs);
    if let (Some(access_key), Some(secret_key)) = (args.access_key, args.secret_key) {
        service.set_auth(SimpleAuth::from_single(access_key, secret_key));
    }
    let service = service.build();

    let listener = TcpListener::bind(("127.0.0.1", args.port))
        .await
        .map_err(|e| format!("bind 127.0.0.1:{}: {e}", args.port))?;
    let port = listener
        .local_addr()
        .map_err(|e| format!("local address: {e}"))?
        .port();
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{port}")
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("write the port: {e}"))?;
    drop(stdout);

    let http = ConnBuilder::new(TokioExecutor::new());
    loop {
        let (socket, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("orgo-test-s3: accept: {e}");
                continue;
            }
        };
        let connection = http
            .serve_connection(TokioIo::new(socket), service.clone())
            .into_owned();
        tokio::spawn(async move {
            // A client that hangs up mid-request is no error of the server.
            let _ = connection.await;
        });
    }
}
