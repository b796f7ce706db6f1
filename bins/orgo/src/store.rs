//! The store commands: `publish`, `templates`, `resolve`, `store verify`,
//! `store gc`, over the local store (in front of the fleet's, in a fleet:
//! see `crate::fleet`).
//!
//! The `system` namespace is not the store's: it holds the curated
//! templates compiled into orgo (`templates/system/`). `templates` lists
//! them, `resolve` (and `build` and `launch`) find them there, and
//! `publish` refuses the namespace.

use std::path::PathBuf;
use std::sync::Arc;

use orgo_runtime::{SYSTEM_NAMESPACE, system_template, system_templates};
use orgo_snapshot::{Checkpoints, LocalStore, Registry, Store, StoreError};
use orgo_template::{Name, Template, TemplateRef};

use crate::{Failure, OutputFormat, emit};

/// Opens the store at `--store`, else the documented default root (in
/// front of the fleet's, in a fleet).
pub(crate) fn open(
    root: Option<PathBuf>,
) -> Result<(tokio::runtime::Runtime, Arc<dyn Store>), Failure> {
    let root = root.or_else(LocalStore::default_root).ok_or_else(|| {
        Failure::Input("no store: set `ORGO_HOME` or `HOME`, or pass `--store DIR`".into())
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Input(format!("cannot start the async runtime: {e}")))?;
    let store = crate::fleet::store(&runtime, &root)?;
    Ok((runtime, store))
}

fn registry(store: &Arc<dyn Store>) -> Registry {
    Registry::new(Arc::clone(store))
}

fn namespace(text: &str) -> Result<Name, Failure> {
    Name::new(text).map_err(|e| Failure::Input(e.to_string()))
}

pub(crate) fn publish(
    root: Option<PathBuf>,
    file: &str,
    ns: &str,
    json: bool,
) -> Result<(), Failure> {
    let ns = namespace(ns)?;
    if ns.as_str() == SYSTEM_NAMESPACE {
        return Err(Failure::Input(format!(
            "`{SYSTEM_NAMESPACE}` is the namespace of orgo's curated templates, which are \
             files in its repository (`templates/{SYSTEM_NAMESPACE}/`), not published; \
             publish in another namespace"
        )));
    }
    let template = crate::load(file, json)?;
    let (runtime, store) = open(root)?;
    let published = runtime
        .block_on(registry(&store).publish(ns, &template))
        .map_err(Failure::Store)?;
    let what = if published.created {
        "published"
    } else {
        "already published"
    };
    emit(&format!(
        "{} {} ({what})\n",
        published.reference, published.digest
    ));
    Ok(())
}

pub(crate) fn templates(root: Option<PathBuf>, ns: Option<&str>) -> Result<(), Failure> {
    let ns = ns.map(namespace).transpose()?;
    let system = |ns: &Name| ns.as_str() == SYSTEM_NAMESPACE;
    let mut listed: Vec<(TemplateRef, String)> = Vec::new();
    if ns.as_ref().is_none_or(system) {
        listed.extend(
            system_templates()
                .into_iter()
                .map(|t| (t.reference(), t.template.digest().to_string())),
        );
    }
    if !ns.as_ref().is_some_and(system) {
        let (runtime, store) = open(root)?;
        let published = runtime
            .block_on(registry(&store).list(ns.as_ref()))
            .map_err(Failure::Store)?;
        // A `system/` ref in the store (published before the namespace was
        // reserved) is shadowed by the curated templates: not listed.
        listed.extend(
            published
                .into_iter()
                .filter(|(reference, _)| !system(reference.namespace()))
                .map(|(reference, digest)| (reference, digest.to_string())),
        );
        // Published checkpoints: launched by ref as templates are.
        let checkpoints = Checkpoints::new(Arc::clone(&store));
        let published = runtime
            .block_on(checkpoints.list_published(ns.as_ref()))
            .map_err(Failure::Store)?;
        listed.extend(
            published
                .into_iter()
                .map(|(reference, digest)| (reference, format!("{digest} (checkpoint)"))),
        );
    }
    listed.sort_by(|(a, _), (b, _)| {
        (a.namespace(), a.name(), a.version()).cmp(&(b.namespace(), b.name(), b.version()))
    });
    let mut out = String::new();
    for (reference, digest) in listed {
        out.push_str(&format!("{reference} {digest}\n"));
    }
    emit(&out);
    Ok(())
}

/// The curated template `reference` names, for a ref in the `system`
/// namespace (an error when there is none); `None` for other namespaces.
pub(crate) fn curated(reference: &TemplateRef) -> Option<Result<Template, Failure>> {
    (reference.namespace().as_str() == SYSTEM_NAMESPACE).then(|| {
        system_template(reference).ok_or_else(|| {
            Failure::No(format!(
                "`{reference}` is not a curated template; `orgo templates {SYSTEM_NAMESPACE}` lists them"
            ))
        })
    })
}

pub(crate) fn resolve(
    root: Option<PathBuf>,
    reference: &str,
    format: Option<OutputFormat>,
) -> Result<(), Failure> {
    let reference: TemplateRef = reference
        .parse()
        .map_err(|e: orgo_template::TemplateError| Failure::Input(e.to_string()))?;
    if let Some(template) = curated(&reference) {
        let template = template?;
        emit(&match format {
            None => format!("{}\n", template.digest()),
            Some(OutputFormat::Yaml) => template.to_yaml(),
            Some(OutputFormat::Json) => format!("{}\n", template.canonical_json()),
        });
        return Ok(());
    }
    let (runtime, store) = open(root)?;
    let registry = registry(&store);
    let not_found = || Failure::No(format!("`{reference}` is not published"));
    let text = match format {
        None => {
            let digest = runtime
                .block_on(registry.resolve_digest(&reference))
                .map_err(Failure::Store)?
                .ok_or_else(not_found)?;
            format!("{digest}\n")
        }
        Some(format) => {
            let template = runtime
                .block_on(registry.resolve(&reference))
                .map_err(Failure::Store)?
                .ok_or_else(not_found)?;
            match format {
                OutputFormat::Yaml => template.to_yaml(),
                OutputFormat::Json => format!("{}\n", template.canonical_json()),
            }
        }
    };
    emit(&text);
    Ok(())
}

pub(crate) fn verify(root: Option<PathBuf>) -> Result<(), Failure> {
    let (runtime, store) = open(root)?;
    let report = runtime
        .block_on(orgo_snapshot::verify(&*store))
        .map_err(Failure::Store)?;
    for problem in &report.problems {
        eprintln!("problem: {problem}");
    }
    let summary = format!(
        "{} ({} bytes) and {} checked, {}",
        plural(report.blobs, "blob"),
        report.bytes,
        plural(report.refs, "ref"),
        plural(report.problems.len() as u64, "problem"),
    );
    if report.problems.is_empty() {
        emit(&format!("{summary}\n"));
        Ok(())
    } else {
        Err(Failure::No(summary))
    }
}

pub(crate) fn gc(root: Option<PathBuf>) -> Result<(), Failure> {
    // First the computers that launches killed half-way left behind: their
    // VMMs, leases and files.
    let (tokio, computers) = crate::computer::open_with_agent(root.clone(), None)?;
    let orphans = tokio
        .block_on(computers.sweep())
        .map_err(crate::computer::runtime_error)?;
    if !orphans.is_empty() {
        emit(&format!(
            "removed {}: {}\n",
            plural(orphans.len() as u64, "orphaned computer"),
            orphans.join(" ")
        ));
    }
    drop((tokio, computers));
    let (runtime, store) = open(root)?;
    // In a fleet: the leases of hosts that are gone go first.
    let expired = crate::fleet::expire_leases(&runtime)?;
    if expired > 0 {
        emit(&format!(
            "expired {}: no host renewed them (`ORGO_LEASE_TTL`)\n",
            plural(expired as u64, "lease")
        ));
    }
    let report = runtime
        .block_on(orgo_snapshot::gc(&*store))
        .map_err(Failure::Store)?;
    emit(&format!(
        "removed {} ({} bytes), {} and {}\n",
        plural(report.blobs_removed, "blob"),
        report.bytes_freed,
        plural(report.refs_removed, "ref"),
        plural(report.incomplete_removed, "incomplete write"),
    ));
    Ok(())
}

fn plural(n: u64, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// Exit status for a store error: 1 when the store said no, 2 when it failed.
pub(crate) fn exit_code(error: &StoreError) -> u8 {
    match error {
        StoreError::Immutable { .. } => 1,
        _ => 2,
    }
}
