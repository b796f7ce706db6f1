//! Streaming the desktop (`streaming[]`): each stream is a supervised
//! `ffmpeg` in the guest (see [`Desktop::stream_service`]), started at
//! launch when its `autostart` is set, and by hand with
//! [`Computer::stream_start`]; a dropped connection ends `ffmpeg`, which
//! starts again with backoff, and [`Computer::stream_status`] reports it.
//!
//! A stream's `key` is a literal, or a secret read at launch (an autostart
//! stream) or when it is started by hand (from the [`Vault`] given): never
//! at build time, so never in a snapshot. A launch keeps the template of a
//! computer beside its record (`template.json`, with secret names, never
//! values), so that any later process can start its streams (or checkpoint
//! it).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use orgo_agent_protocol::{ExitStatus, ServiceSpec, ServiceState};
use orgo_template::{EnvValue, Template};

use crate::agent::AgentClient;
use crate::computer::Computer;
use crate::desktop::{self, Desktop};
use crate::error::RuntimeError;
use crate::guest::{QUICK, call};
use crate::vault::Vault;

/// The template kept beside a computer's record.
pub(crate) const TEMPLATE_FILE: &str = "template.json";

/// Where a stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamState {
    /// `ffmpeg` runs (connecting, or sending).
    Streaming,
    /// The connection dropped or failed: waiting out the backoff before the
    /// next try.
    Retrying,
    /// Not started, or stopped.
    Stopped,
    /// Could not be started.
    Failed,
}

impl StreamState {
    /// `streaming`, `retrying`, `stopped` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamState::Streaming => "streaming",
            StreamState::Retrying => "retrying",
            StreamState::Stopped => "stopped",
            StreamState::Failed => "failed",
        }
    }
}

/// A stream's status.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamStatus {
    /// The stream's name.
    pub name: String,
    /// Where it is.
    pub state: StreamState,
    /// Tries after the first (each dropped connection is one).
    pub restarts: u32,
    /// How the last try ended.
    pub last_exit: Option<ExitStatus>,
}

/// The service of stream `name` of `template`, its key from `secret`
/// (a secret's value by name); an error names the field.
fn spec(
    template: &Template,
    name: &str,
    secret: &dyn Fn(&str) -> Option<String>,
) -> Result<ServiceSpec, RuntimeError> {
    let desktop = desktop::plan(template).expect("a template with streams has a desktop");
    let (i, stream) = template
        .streaming()
        .iter()
        .enumerate()
        .find(|(_, s)| s.name.as_str() == name)
        .ok_or_else(|| RuntimeError::NotFound {
            what: format!("stream `{name}` in template `{}`", template_ref(template)),
        })?;
    service(&desktop, i, stream, secret)
}

fn template_ref(template: &Template) -> String {
    let identity = template.template();
    format!("{}@{}", identity.name, identity.version)
}

fn service(
    desktop: &Desktop,
    i: usize,
    stream: &orgo_template::Stream,
    secret: &dyn Fn(&str) -> Option<String>,
) -> Result<ServiceSpec, RuntimeError> {
    let key = match &stream.key {
        None => None,
        Some(EnvValue::Literal(text)) => Some(text.clone()),
        Some(EnvValue::Secret { secret: name }) => {
            Some(secret(name.as_str()).ok_or_else(|| RuntimeError::Invalid {
                what: format!(
                    "`streaming[{i}].key`: secret `{name}` has no value (give it at launch, as `ORGO_SECRET_{}`, or in the vault)",
                    name.as_str().to_uppercase()
                ),
            })?)
        }
        Some(_) => None,
    };
    Ok(desktop.stream_service(stream.name.as_str(), &stream.url, key.as_deref()))
}

/// At launch: keeps the template beside the record (streams and
/// checkpoints read it), and starts the streams marked `autostart`.
pub(crate) async fn on_launch(
    dir: &Path,
    agent: &Arc<AgentClient>,
    template: &Template,
    secrets: &BTreeMap<String, String>,
) -> Result<(), RuntimeError> {
    let path = dir.join(TEMPLATE_FILE);
    std::fs::write(&path, template.canonical_json()).map_err(|source| RuntimeError::Io {
        op: "write",
        path,
        source,
    })?;
    let Some(desktop) = desktop::plan(template) else {
        return Ok(());
    };
    for (i, stream) in template.streaming().iter().enumerate() {
        if stream.autostart {
            let spec = service(&desktop, i, stream, &|name| secrets.get(name).cloned())?;
            call(agent, move |a| a.start_service(spec, QUICK)).await?;
        }
    }
    Ok(())
}

impl Computer {
    /// The template kept at launch.
    fn kept_template(&self) -> Result<Template, RuntimeError> {
        let path = self.dir().join(TEMPLATE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RuntimeError::NoDesktop {
                    id: self.id().to_owned(),
                });
            }
            Err(source) => {
                return Err(RuntimeError::Io {
                    op: "read",
                    path,
                    source,
                });
            }
        };
        let template = Template::from_json(&text).map_err(|e| RuntimeError::Invalid {
            what: format!("template kept at `{}`: {e}", path.display()),
        })?;
        if desktop::plan(&template).is_none() {
            return Err(RuntimeError::NoDesktop {
                id: self.id().to_owned(),
            });
        }
        Ok(template)
    }

    /// Starts streaming to stream `name` of the template (again, if it
    /// streams already); a secret key is read from `vault`.
    pub async fn stream_start(&self, name: &str, vault: &Vault) -> Result<(), RuntimeError> {
        let template = self.kept_template()?;
        let spec = spec(&template, name, &|secret| {
            vault.get(secret).map(str::to_owned)
        })?;
        call(&self.agent(), move |a| a.start_service(spec, QUICK)).await
    }

    /// Stops stream `name` (nothing if it does not stream).
    pub async fn stream_stop(&self, name: &str) -> Result<(), RuntimeError> {
        let template = self.kept_template()?;
        if !template.streaming().iter().any(|s| s.name.as_str() == name) {
            return Err(RuntimeError::NotFound {
                what: format!("stream `{name}` in template `{}`", template_ref(&template)),
            });
        }
        if self.stream_status(name).await?.state == StreamState::Stopped {
            return Ok(());
        }
        let service = desktop::stream_service_name(name);
        call(&self.agent(), move |a| a.stop_service(&service, QUICK)).await
    }

    /// Where stream `name` is.
    pub async fn stream_status(&self, name: &str) -> Result<StreamStatus, RuntimeError> {
        let template = self.kept_template()?;
        if !template.streaming().iter().any(|s| s.name.as_str() == name) {
            return Err(RuntimeError::NotFound {
                what: format!("stream `{name}` in template `{}`", template_ref(&template)),
            });
        }
        let service = desktop::stream_service_name(name);
        let services = call(&self.agent(), |a| a.services(QUICK)).await?;
        let found = services.into_iter().find(|s| s.name == service);
        Ok(match found {
            None => StreamStatus {
                name: name.to_owned(),
                state: StreamState::Stopped,
                restarts: 0,
                last_exit: None,
            },
            Some(s) => StreamStatus {
                name: name.to_owned(),
                state: match s.state {
                    ServiceState::Running => StreamState::Streaming,
                    ServiceState::Backoff => StreamState::Retrying,
                    ServiceState::Stopped => StreamState::Stopped,
                    _ => StreamState::Failed,
                },
                restarts: s.restarts,
                last_exit: s.last_exit,
            },
        })
    }
}
