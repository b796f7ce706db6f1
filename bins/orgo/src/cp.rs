//! `orgo cp SRC DST`: a file into or out of a computer, `ID:PATH` on one
//! side (local mode here; remote mode in `remote`).

use std::io::{Read as _, Write as _};
use std::path::PathBuf;

use clap::Args;

use crate::Failure;

/// The largest file copied (the agent protocol's limit).
const MAX_BYTES: u64 = 8 << 20;

#[derive(Args)]
pub(crate) struct CpArgs {
    /// `ID:PATH`, a local file, or `-` (stdin).
    pub(crate) source: String,
    /// `ID:PATH`, a local file, or `-` (stdout).
    pub(crate) destination: String,
}

/// One side of a copy.
pub(crate) enum End {
    /// A file in a computer.
    Computer { id: String, path: String },
    /// A local file, or `-`.
    Local(String),
}

impl End {
    fn parse(text: &str) -> End {
        if let Some((id, path)) = text.split_once(':')
            && is_computer_id(id)
        {
            return End::Computer {
                id: id.to_owned(),
                path: path.to_owned(),
            };
        }
        End::Local(text.to_owned())
    }
}

/// `c-` and 12 lowercase hex digits.
fn is_computer_id(text: &str) -> bool {
    text.strip_prefix("c-").is_some_and(|hex| {
        hex.len() == 12 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// The copy's two ends: exactly one is in a computer.
pub(crate) fn ends(args: &CpArgs) -> Result<(End, End), Failure> {
    let (from, to) = (End::parse(&args.source), End::parse(&args.destination));
    match (&from, &to) {
        (End::Computer { .. }, End::Local(_)) | (End::Local(_), End::Computer { .. }) => {
            Ok((from, to))
        }
        _ => Err(Failure::Input(format!(
            "`orgo cp {} {}`: one side is `ID:PATH` (a computer's file), the other a local file or `-`",
            args.source, args.destination
        ))),
    }
}

/// Reads a local file or stdin, at most [`MAX_BYTES`].
pub(crate) fn read_local(file: &str) -> Result<Vec<u8>, Failure> {
    let mut bytes = Vec::new();
    let read = if file == "-" {
        std::io::stdin()
            .lock()
            .take(MAX_BYTES + 1)
            .read_to_end(&mut bytes)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(MAX_BYTES + 1).read_to_end(&mut bytes))
    };
    read.map_err(|e| Failure::Input(format!("cannot read `{file}`: {e}")))?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(Failure::Input(format!(
            "`{file}` is over the {MAX_BYTES}-byte limit of a copy"
        )));
    }
    Ok(bytes)
}

/// Writes a local file (atomically) or stdout.
pub(crate) fn write_local(file: &str, bytes: &[u8]) -> Result<(), Failure> {
    if file == "-" {
        let mut out = std::io::stdout().lock();
        return out
            .write_all(bytes)
            .and_then(|()| out.flush())
            .map_err(|e| Failure::Input(format!("cannot write stdout: {e}")));
    }
    let path = PathBuf::from(file);
    let tmp = path.with_file_name(format!(
        ".{}.orgo-cp.{}",
        path.file_name()
            .map_or("file".into(), |n| n.to_string_lossy()),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Failure::Input(format!("cannot write `{file}`: {e}"))
        })
}

pub(crate) fn local(
    root: Option<PathBuf>,
    rt: &crate::computer::RuntimeArgs,
    args: CpArgs,
) -> Result<(), Failure> {
    let (from, to) = ends(&args)?;
    let (tokio, runtime) = crate::computer::open_with_agent(root, rt.agent())?;
    match (from, to) {
        (End::Computer { id, path }, End::Local(file)) => {
            let computer = tokio
                .block_on(runtime.connect(&id))
                .map_err(crate::computer::runtime_error)?;
            let bytes = tokio
                .block_on(computer.read_file(&path))
                .map_err(crate::computer::runtime_error)?;
            write_local(&file, &bytes)
        }
        (End::Local(file), End::Computer { id, path }) => {
            let bytes = read_local(&file)?;
            let computer = tokio
                .block_on(runtime.connect(&id))
                .map_err(crate::computer::runtime_error)?;
            tokio
                .block_on(computer.write_file(&path, bytes, None))
                .map_err(crate::computer::runtime_error)
        }
        _ => unreachable!("ends() checked one side is a computer"),
    }
}
