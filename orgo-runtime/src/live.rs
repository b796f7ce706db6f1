//! What a computer's handles in this process share: its agent channel and,
//! while this process holds them, its VM's handle and network. A restart
//! (`on_fail: restart_vm`, see the `restart` module) replaces the agent and
//! the VM under every handle at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::agent::AgentClient;
use crate::net::Attached;
use crate::vmm::Vm;

/// What a computer's handles in this process share with its watcher: its
/// agent channel and, when this process launched it and has not detached
/// it, its VM's handle and network. A restart replaces the agent and VM.
#[derive(Debug)]
pub(crate) struct Live {
    id: String,
    parts: Mutex<Parts>,
    /// Set once the computer stops, or its launching handle is dropped:
    /// the watcher ends.
    ended: AtomicBool,
    /// Set once the launching handle let the VM run on its own: a
    /// restart's new VM is left running too.
    detached: AtomicBool,
    /// Held by a restart under way (a stop waits for it).
    restarting: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct Parts {
    agent: Arc<AgentClient>,
    vm: Option<Box<dyn Vm>>,
    net: Option<Attached>,
}

impl Live {
    pub(crate) fn new(
        id: &str,
        agent: Arc<AgentClient>,
        vm: Option<Box<dyn Vm>>,
        net: Option<Attached>,
    ) -> Arc<Live> {
        Arc::new(Live {
            id: id.to_owned(),
            detached: AtomicBool::new(vm.is_none()),
            parts: Mutex::new(Parts { agent, vm, net }),
            ended: AtomicBool::new(false),
            restarting: tokio::sync::Mutex::new(()),
        })
    }

    fn parts(&self) -> MutexGuard<'_, Parts> {
        self.parts.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The agent channel of the computer's current VM.
    pub(crate) fn agent(&self) -> Arc<AgentClient> {
        Arc::clone(&self.parts().agent)
    }

    /// Takes the VM's handle (this process's, not detached).
    pub(crate) fn take_vm(&self) -> Option<Box<dyn Vm>> {
        self.parts().vm.take()
    }

    /// Takes the network's handle (this process's, not detached).
    pub(crate) fn take_net(&self) -> Option<Attached> {
        self.parts().net.take()
    }

    /// Lets the VM and its network run on after every handle is gone.
    pub(crate) fn detach(&self) {
        self.detached.store(true, Ordering::SeqCst);
        let (vm, net) = {
            let mut parts = self.parts();
            (parts.vm.take(), parts.net.take())
        };
        if let Some(vm) = vm {
            vm.detach();
        }
        if let Some(net) = net {
            net.detach();
        }
    }

    /// Ends the watcher (at its next look, or after the restart under way).
    pub(crate) fn end(&self) {
        self.ended.store(true, Ordering::SeqCst);
    }

    pub(crate) fn ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    /// Ends the watcher and waits for a restart under way to finish.
    pub(crate) async fn settle(&self) {
        self.end();
        drop(self.restarting.lock().await);
    }

    /// Held by a restart for as long as it runs ([`Live::settle`] waits).
    pub(crate) async fn restarting(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.restarting.lock().await
    }

    /// After a restart: the new VM's agent, and its handle (left running
    /// on its own if the launching handle detached; killed if the computer
    /// stopped meanwhile).
    pub(crate) fn replace(&self, agent: Arc<AgentClient>, vm: Box<dyn Vm>) {
        let mut parts = self.parts();
        parts.agent = agent;
        if self.ended() {
            drop(vm);
        } else if self.detached.load(Ordering::SeqCst) {
            vm.detach();
        } else {
            parts.vm = Some(vm);
        }
    }
}

/// The computers this process watches, by id (their watchers hold the
/// only other strong reference).
#[derive(Debug, Default)]
pub(crate) struct Watched(Mutex<HashMap<String, Weak<Live>>>);

impl Watched {
    /// The watched computer `id`'s shared parts, if this process watches it.
    pub(crate) fn get(&self, id: &str) -> Option<Arc<Live>> {
        let mut lives = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let live = lives.get(id).and_then(Weak::upgrade);
        if live.is_none() {
            lives.remove(id);
        }
        live
    }

    /// Watches `live`.
    pub(crate) fn insert(&self, live: &Arc<Live>) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(live.id.clone(), Arc::downgrade(live));
    }
}
