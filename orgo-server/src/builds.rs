//! The build registry: one build per template digest, shared by every
//! request that asks for it, with its log kept for late subscribers.
//!
//! A build's log is a list of [`Frame`]s (the runtime's build events, one
//! frame per line of output); a subscriber gets every frame so far, then
//! the live ones, then the final status. At most [`MAX_FRAMES`] frames are
//! kept per build (a guest's output is not trusted to be small): past
//! that, one frame says how many were dropped.
//!
//! Restart safety: a build in progress has a marker in
//! `<home>/server/builds/<hex>.json`. A server that starts and finds one
//! still `building` (its previous process died) rewrites it `failed`, with
//! the reason: a build is never left `building`. A build that ends
//! removes its marker (the store records failures itself), except a
//! cancelled one, which has no other record.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use orgo_runtime::{BuildEvent, ErrorChain, Runtime, RuntimeError, Stream};
use orgo_snapshot::{Version, VersionedFormat};
use orgo_template::{Digest, Template};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use utoipa::ToSchema;

use crate::error::{ApiError, Code};

/// How many frames a build's log keeps.
pub const MAX_FRAMES: usize = 20_000;
/// The longest line of a frame; longer output lines are split.
const MAX_LINE: usize = 8 * 1024;
/// How many finished builds stay in memory (their logs, for late
/// subscribers); older ones answer from the store.
const KEEP_FINISHED: usize = 64;

const MARKER: VersionedFormat =
    VersionedFormat::new("orgo_server_build", Version::new(1, 0), 64 * 1024);

/// Where a build is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BuildStatus {
    /// Never built (and no build runs).
    None,
    /// A build runs.
    Building,
    /// The snapshot is in the store.
    Ready,
    /// The last build failed (or was cancelled, or interrupted).
    Failed,
}

/// Why a build failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BuildFailure {
    /// One line, for people.
    pub message: String,
    /// The failing step's template field (`build.run[1]`), when a step failed.
    pub field: Option<String>,
    /// The failing step's output (its end), when a step failed.
    pub output: Option<String>,
}

/// A build's state, as `GET .../build` answers it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BuildView {
    /// The template's digest.
    pub digest: String,
    /// Where the build is.
    pub status: BuildStatus,
    /// How long the build took (for a build this server ran).
    pub build_time_ms: Option<u64>,
    /// The snapshot manifest's digest, once ready.
    pub snapshot: Option<String>,
    /// Why it failed.
    pub error: Option<BuildFailure>,
}

/// One line of a build's log (an SSE `log` event's data).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Frame {
    /// When, in milliseconds since the Unix epoch.
    pub ts: u64,
    /// `info`, `output` or `error`.
    pub level: &'static str,
    /// `status` (what the build does), `step` (a step starts), `output`.
    pub phase: &'static str,
    /// `orgo`, `stdout` or `stderr`.
    pub source: &'static str,
    /// The step's template field, while a step runs.
    pub field: Option<String>,
    /// The text.
    pub line: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    reference: String,
    digest: Digest,
    status: BuildStatus,
    started_unix: u64,
    error: Option<BuildFailure>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A build this server runs or ran.
#[derive(Debug)]
pub(crate) struct Job {
    digest: Digest,
    inner: Mutex<JobLog>,
    changed: watch::Sender<u64>,
    cancel: Notify,
}

#[derive(Debug, Default)]
struct JobLog {
    frames: Vec<Frame>,
    dropped: u64,
    status: Option<BuildStatus>,
    error: Option<BuildFailure>,
    build_time_ms: Option<u64>,
    snapshot: Option<String>,
    field: Option<String>,
    partial: [Vec<u8>; 2],
}

impl JobLog {
    fn push(&mut self, frame: Frame) {
        if self.frames.len() < MAX_FRAMES {
            self.frames.push(frame);
        } else {
            self.dropped += 1;
        }
    }

    fn flush(&mut self, index: usize) {
        let rest = std::mem::take(&mut self.partial[index]);
        if !rest.is_empty() {
            self.output_line(index, &rest);
        }
    }

    fn output_line(&mut self, index: usize, bytes: &[u8]) {
        let source = if index == 0 { "stdout" } else { "stderr" };
        for chunk in bytes.chunks(MAX_LINE) {
            let frame = Frame {
                ts: now_ms(),
                level: "output",
                phase: "output",
                source,
                field: self.field.clone(),
                line: String::from_utf8_lossy(chunk).into_owned(),
            };
            self.push(frame);
        }
    }

    fn event(&mut self, event: BuildEvent) {
        match event {
            BuildEvent::Status(text) => self.push(Frame {
                ts: now_ms(),
                level: "info",
                phase: "status",
                source: "orgo",
                field: None,
                line: text,
            }),
            BuildEvent::Step {
                field,
                index,
                total,
            } => {
                self.flush(0);
                self.flush(1);
                self.field = Some(field.clone());
                self.push(Frame {
                    ts: now_ms(),
                    level: "info",
                    phase: "step",
                    source: "orgo",
                    field: Some(field.clone()),
                    line: format!("[{index}/{total}] {field}"),
                });
            }
            BuildEvent::Output { stream, data } => {
                let index = usize::from(stream == Stream::Stderr);
                let mut buffer = std::mem::take(&mut self.partial[index]);
                buffer.extend_from_slice(&data);
                let mut start = 0;
                while let Some(end) = buffer[start..].iter().position(|&b| b == b'\n') {
                    self.output_line(index, &buffer[start..start + end]);
                    start += end + 1;
                }
                let mut rest = buffer.split_off(start);
                if rest.len() > MAX_LINE {
                    self.output_line(index, &rest);
                    rest.clear();
                }
                self.partial[index] = rest;
            }
            _ => {}
        }
    }
}

impl Job {
    fn new(digest: Digest) -> Job {
        Job {
            digest,
            inner: Mutex::new(JobLog {
                status: Some(BuildStatus::Building),
                ..JobLog::default()
            }),
            changed: watch::channel(0).0,
            cancel: Notify::new(),
        }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, JobLog> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Its state now.
    pub(crate) fn view(&self) -> BuildView {
        let log = self.log();
        BuildView {
            digest: self.digest.to_string(),
            status: log.status.unwrap_or(BuildStatus::Building),
            build_time_ms: log.build_time_ms,
            snapshot: log.snapshot.clone(),
            error: log.error.clone(),
        }
    }

    /// Waits for the build to end; returns its final state.
    pub(crate) async fn finished(&self) -> BuildView {
        let mut rx = self.changed.subscribe();
        loop {
            let view = self.view();
            if view.status != BuildStatus::Building {
                return view;
            }
            if rx.changed().await.is_err() {
                return self.view();
            }
        }
    }

    /// Frames from `from` on, and the final state once the build ended.
    pub(crate) fn frames_since(&self, from: usize) -> (Vec<Frame>, Option<(u64, BuildView)>) {
        let log = self.log();
        let frames = log.frames.get(from..).unwrap_or_default().to_vec();
        let done = log.status != Some(BuildStatus::Building);
        let dropped = log.dropped;
        drop(log);
        (frames, done.then(|| (dropped, self.view())))
    }

    /// A receiver that sees every change.
    pub(crate) fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Asks the build to stop.
    pub(crate) fn cancel(&self) {
        self.cancel.notify_one();
    }
}

/// The builds of this server.
#[derive(Debug)]
pub(crate) struct Builds {
    jobs: Mutex<HashMap<Digest, Arc<Job>>>,
    /// Finished digests, oldest first (to forget the oldest).
    finished: Mutex<Vec<Digest>>,
    dir: PathBuf,
    limit: usize,
}

impl Builds {
    pub(crate) fn new(home: &Path, limit: usize) -> Builds {
        Builds {
            jobs: Mutex::new(HashMap::new()),
            finished: Mutex::new(Vec::new()),
            dir: home.join("server/builds"),
            limit,
        }
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Arc<Job>>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn marker_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(format!("{}.json", digest.hex()))
    }

    fn write_marker(&self, marker: &Marker) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.marker_path(&marker.digest);
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(&MARKER.to_value(marker)).expect("a marker serializes");
        let mut file = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut file, &bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    }

    fn read_marker(&self, digest: &Digest) -> Option<Marker> {
        MARKER.read_file(&self.marker_path(digest)).ok()
    }

    /// At start: builds a previous process left `building` are `failed`.
    pub(crate) fn recover(&self) -> std::io::Result<Vec<Digest>> {
        let mut failed = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(failed),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let path = entry?.path();
            if path.extension().is_none_or(|x| x != "json") {
                let _ = std::fs::remove_file(&path); // a temp file of a dead write
                continue;
            }
            let Ok(mut marker) = MARKER.read_file::<Marker>(&path) else {
                let _ = std::fs::remove_file(&path);
                continue;
            };
            if marker.status == BuildStatus::Building {
                marker.status = BuildStatus::Failed;
                marker.error = Some(BuildFailure {
                    message: "interrupted: the server stopped during the build".into(),
                    field: None,
                    output: None,
                });
                self.write_marker(&marker)?;
                failed.push(marker.digest);
            }
        }
        Ok(failed)
    }

    /// The build of `digest` this server knows of.
    pub(crate) fn job(&self, digest: &Digest) -> Option<Arc<Job>> {
        self.jobs().get(digest).cloned()
    }

    /// The state of `digest`'s build: this server's, else the store's.
    pub(crate) async fn status(
        &self,
        runtime: &Runtime,
        digest: &Digest,
    ) -> Result<BuildView, ApiError> {
        if let Some(job) = self.job(digest) {
            return Ok(job.view());
        }
        let cache = orgo_snapshot::BuildCache::new(runtime.shared_store());
        let mut view = BuildView {
            digest: digest.to_string(),
            status: BuildStatus::None,
            build_time_ms: None,
            snapshot: None,
            error: None,
        };
        if let Some(built) = runtime.built(digest).await? {
            view.status = BuildStatus::Ready;
            view.snapshot = Some(built.digest.to_string());
        } else if let Some(marker) = self.read_marker(digest) {
            view.status = marker.status;
            view.error = marker.error;
        } else if let Some(failure) = cache.failure(digest).await? {
            view.status = BuildStatus::Failed;
            view.error = Some(BuildFailure {
                message: failure.message,
                field: None,
                output: Some(failure.log),
            });
        }
        Ok(view)
    }

    /// Starts `template`'s build, or joins the one that runs; `true` when
    /// joined (or when the snapshot is built already).
    pub(crate) async fn start(
        self: &Arc<Self>,
        runtime: &Runtime,
        template: Template,
        reference: String,
    ) -> Result<(Arc<Job>, bool), ApiError> {
        let digest = template.digest();
        let built = runtime.built(&digest).await?.is_some();
        let mut jobs = self.jobs();
        if let Some(job) = jobs.get(&digest)
            && (built || job.view().status == BuildStatus::Building)
        {
            return Ok((Arc::clone(job), true));
        }
        let running = jobs
            .values()
            .filter(|j| j.view().status == BuildStatus::Building)
            .count();
        if !built && running >= self.limit {
            return Err(ApiError::new(
                Code::TooManyBuilds,
                format!("{running} builds run, the most this server runs at once"),
            )
            .retry_after(30));
        }
        let job = Arc::new(Job::new(digest));
        jobs.insert(digest, Arc::clone(&job));
        drop(jobs);
        let marker = Marker {
            reference,
            digest,
            status: BuildStatus::Building,
            started_unix: now_ms() / 1000,
            error: None,
        };
        if !built {
            self.write_marker(&marker)
                .map_err(|e| ApiError::internal(&e))?;
        }
        let builds = Arc::clone(self);
        let runtime = runtime.clone();
        let running = Arc::clone(&job);
        tokio::spawn(async move {
            let started = Instant::now();
            let sink = Arc::clone(&running);
            let mut log = move |event: BuildEvent| {
                sink.log().event(event);
                sink.bump();
            };
            let outcome = tokio::select! {
                result = runtime.build(&template, &mut log) => Some(result),
                () = running.cancel.notified() => None,
            };
            builds.finish(&running, marker, outcome, started);
        });
        Ok((job, built))
    }

    fn finish(
        &self,
        job: &Arc<Job>,
        mut marker: Marker,
        outcome: Option<Result<orgo_snapshot::Built, RuntimeError>>,
        started: Instant,
    ) {
        let snapshot = match &outcome {
            Some(Ok(built)) => Some(built.digest.to_string()),
            _ => None,
        };
        let (status, error) = match outcome {
            Some(Ok(_)) => (BuildStatus::Ready, None),
            Some(Err(error)) => (BuildStatus::Failed, Some(failure(&error))),
            None => (
                BuildStatus::Failed,
                Some(BuildFailure {
                    message: "cancelled".into(),
                    field: None,
                    output: None,
                }),
            ),
        };
        if error.as_ref().is_some_and(|e| e.message == "cancelled") {
            marker.status = BuildStatus::Failed;
            marker.error = error.clone();
            let _ = self.write_marker(&marker);
        } else {
            let _ = std::fs::remove_file(self.marker_path(&marker.digest));
        }
        {
            let mut log = job.log();
            log.flush(0);
            log.flush(1);
            if let Some(error) = &error {
                log.push(Frame {
                    ts: now_ms(),
                    level: "error",
                    phase: "status",
                    source: "orgo",
                    field: error.field.clone(),
                    line: error.message.clone(),
                });
            }
            log.status = Some(status);
            log.snapshot = snapshot;
            log.error = error;
            log.build_time_ms = Some(started.elapsed().as_millis() as u64);
        }
        job.bump();
        let mut finished = self.finished.lock().unwrap_or_else(|e| e.into_inner());
        finished.retain(|d| *d != job.digest);
        finished.push(job.digest);
        if finished.len() > KEEP_FINISHED {
            let old = finished.remove(0);
            let mut jobs = self.jobs();
            if jobs
                .get(&old)
                .is_some_and(|j| j.view().status != BuildStatus::Building)
            {
                jobs.remove(&old);
            }
        }
    }

    /// Cancels every running build (the server stops) and waits for them
    /// to end.
    pub(crate) async fn cancel_all(&self) {
        let running: Vec<Arc<Job>> = self
            .jobs()
            .values()
            .filter(|j| j.view().status == BuildStatus::Building)
            .cloned()
            .collect();
        for job in &running {
            job.cancel();
        }
        for job in running {
            job.finished().await;
        }
    }
}

/// A runtime error as a build failure.
fn failure(error: &RuntimeError) -> BuildFailure {
    match error {
        RuntimeError::Build(step) => BuildFailure {
            message: ErrorChain(error).to_string(),
            field: Some(step.field.clone()),
            output: Some(step.output.clone()),
        },
        RuntimeError::Step { field, .. } => BuildFailure {
            message: ErrorChain(error).to_string(),
            field: Some(field.clone()),
            output: None,
        },
        other => BuildFailure {
            message: ErrorChain(other).to_string(),
            field: None,
            output: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_split_into_lines_under_the_running_step() {
        let mut log = JobLog::default();
        log.event(BuildEvent::Step {
            field: "build.run[0]".into(),
            index: 1,
            total: 1,
        });
        for chunk in ["one\ntw", "o\nthree"] {
            log.event(BuildEvent::Output {
                stream: Stream::Stdout,
                data: chunk.as_bytes().to_vec(),
            });
        }
        log.flush(0);
        let lines: Vec<(&str, Option<&str>)> = log
            .frames
            .iter()
            .map(|f| (f.line.as_str(), f.field.as_deref()))
            .collect();
        assert_eq!(
            lines,
            [
                ("[1/1] build.run[0]", Some("build.run[0]")),
                ("one", Some("build.run[0]")),
                ("two", Some("build.run[0]")),
                ("three", Some("build.run[0]")),
            ]
        );
    }

    #[test]
    fn the_log_is_bounded() {
        let mut log = JobLog::default();
        let data = "x\n".repeat(MAX_FRAMES + 10).into_bytes();
        log.event(BuildEvent::Output {
            stream: Stream::Stderr,
            data,
        });
        assert_eq!(log.frames.len(), MAX_FRAMES);
        assert_eq!(log.dropped, 10);
        let long = vec![b'y'; MAX_LINE * 3];
        let mut log = JobLog::default();
        log.event(BuildEvent::Output {
            stream: Stream::Stdout,
            data: long,
        });
        assert!(log.partial[0].is_empty() && log.frames.len() == 3);
    }

    #[test]
    fn a_build_left_building_is_failed_at_start() {
        let home = tempfile::tempdir().expect("a temp dir");
        let builds = Builds::new(home.path(), 1);
        let digest = Digest::of(b"t");
        let marker = Marker {
            reference: "team/t@1.0.0".into(),
            digest,
            status: BuildStatus::Building,
            started_unix: 1,
            error: None,
        };
        builds.write_marker(&marker).expect("written");
        assert_eq!(builds.recover().expect("recovers"), [digest]);
        let read = builds.read_marker(&digest).expect("kept");
        assert_eq!(read.status, BuildStatus::Failed);
        assert!(
            read.error
                .expect("a reason")
                .message
                .contains("interrupted")
        );
        assert!(builds.recover().expect("recovers").is_empty());
    }
}
