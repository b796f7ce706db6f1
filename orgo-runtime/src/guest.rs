//! The async face of the agent channel: connect to a guest's agent and
//! call it from async code (the client is blocking; each call runs on a
//! blocking thread), and the requests every computer gets.

use std::sync::Arc;
use std::time::Duration;

use orgo_agent_protocol::Exec;

use crate::agent::{AgentClient, AgentError};
use crate::error::{RuntimeError, joined};
use crate::vmm::AgentEndpoint;

/// How long a booting guest may take to answer (TCG boots take seconds).
pub(crate) const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a restored guest may take to answer.
pub(crate) const RESTORE_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests that do not run user code.
pub(crate) const QUICK: Duration = Duration::from_secs(30);

/// Connects to the agent behind `endpoint`, within `timeout`.
pub(crate) async fn connect(
    endpoint: AgentEndpoint,
    timeout: Duration,
) -> Result<Arc<AgentClient>, RuntimeError> {
    let job = tokio::task::spawn_blocking(move || match endpoint {
        AgentEndpoint::Serial(path) => AgentClient::connect_serial(&path, timeout),
        AgentEndpoint::HybridVsock { path, port } => {
            AgentClient::connect_hybrid_vsock(&path, port, timeout)
        }
    });
    joined("agent", job)
        .await?
        .map(Arc::new)
        .map_err(RuntimeError::Agent)
}

/// Runs a blocking agent request on a blocking thread.
pub(crate) async fn call<T: Send + 'static>(
    agent: &Arc<AgentClient>,
    f: impl FnOnce(&AgentClient) -> Result<T, AgentError> + Send + 'static,
) -> Result<T, RuntimeError> {
    let agent = Arc::clone(agent);
    joined("agent", tokio::task::spawn_blocking(move || f(&agent)))
        .await?
        .map_err(RuntimeError::Agent)
}

/// Gives the guest fresh entropy from the host's CSPRNG, the host's clock,
/// a machine-id derived from that entropy, and `id` as its hostname.
pub(crate) async fn reset_identity(agent: &Arc<AgentClient>, id: &str) -> Result<(), RuntimeError> {
    let mut entropy = vec![0u8; 64];
    getrandom::fill(&mut entropy).map_err(RuntimeError::Entropy)?;
    let hostname = id.to_owned();
    call(agent, move |a| {
        a.reset_identity(entropy, Some(hostname), QUICK)
    })
    .await
}

/// The base image's 2 GiB root file system grows to the disk the template
/// asks for (the copy-on-write layer is that large already).
pub(crate) async fn grow_root_filesystem(agent: &Arc<AgentClient>) -> Result<(), RuntimeError> {
    let exec = Exec::shell(
        "command -v resize2fs >/dev/null && resize2fs /dev/vda >/dev/null 2>&1 || true",
    );
    call(agent, move |a| a.exec(exec, QUICK)).await.map(drop)
}
