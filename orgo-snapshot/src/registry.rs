//! The template registry: `namespace/name@version` -> canonical template,
//! immutable once published.

use std::sync::Arc;

use orgo_template::{Digest, Name, Template, TemplateRef};

use crate::error::StoreError;
use crate::service::{LockMode, RefKey, Store, read_small, refs_under};

/// Where refs of each kind live.
pub(crate) mod keys {
    use super::*;

    pub(crate) const TEMPLATES: &str = "templates";
    pub(crate) const SNAPSHOTS: &str = "snapshots";
    pub(crate) const FAILURES: &str = "failures";
    pub(crate) const IMAGES: &str = "images";
    pub(crate) const LEASES: &str = "leases";
    pub(crate) const CHECKPOINTS: &str = "checkpoints";
    /// Checkpoints published under a ref (`published/<ns>/<name>/<version>`).
    pub(crate) const PUBLISHED: &str = "published";

    pub(crate) fn root(kind: &str) -> RefKey {
        RefKey::new(kind).expect("kind names are valid keys")
    }

    pub(crate) fn template(reference: &TemplateRef) -> RefKey {
        under(TEMPLATES, reference)
    }

    /// Where a checkpoint published under `reference` is.
    pub(crate) fn published(reference: &TemplateRef) -> RefKey {
        under(PUBLISHED, reference)
    }

    /// The lock held while `reference` is given to a template or a
    /// checkpoint: a ref names one or the other, never both.
    pub(crate) fn publishing(reference: &TemplateRef) -> RefKey {
        under("publishing", reference)
    }

    fn under(kind: &str, reference: &TemplateRef) -> RefKey {
        RefKey::new(&format!(
            "{kind}/{}/{}/{}",
            reference.namespace(),
            reference.name(),
            reference.version()
        ))
        .expect("names and semver versions are valid key segments")
    }

    pub(crate) fn by_digest(kind: &str, digest: &Digest) -> RefKey {
        RefKey::new(&format!("{kind}/{}", digest.hex())).expect("hex is a valid key segment")
    }

    /// The lock every writer holds shared and gc holds exclusive.
    pub(crate) fn gc_lock() -> RefKey {
        RefKey::new("gc").expect("a valid key")
    }
}

/// The largest template the registry stores (the format's own cap).
const MAX_TEMPLATE_BYTES: u64 = orgo_template::MAX_DOCUMENT_BYTES as u64;

/// The outcome of [`Registry::publish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Where it was published.
    pub reference: TemplateRef,
    /// The template's digest.
    pub digest: Digest,
    /// `false` when the identical template was already published there.
    pub created: bool,
}

/// The namespace of orgo's curated templates, which ship with orgo and are
/// never published into a store.
pub const RESERVED_NAMESPACE: &str = orgo_template::TemplateRef::SYSTEM_NAMESPACE;

/// Published templates, over any [`Store`].
#[derive(Debug, Clone)]
pub struct Registry {
    store: Arc<dyn Store>,
}

impl Registry {
    /// A registry over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Publishes `template` under `namespace/<its name>@<its version>`.
    /// Publishing the identical template again is a no-op; a different
    /// template under a published version is [`StoreError::Immutable`];
    /// the reserved namespace ([`RESERVED_NAMESPACE`]) is
    /// [`StoreError::Reserved`].
    pub async fn publish(
        &self,
        namespace: Name,
        template: &Template,
    ) -> Result<Published, StoreError> {
        if namespace.as_str() == RESERVED_NAMESPACE {
            return Err(StoreError::Reserved {
                namespace: namespace.to_string(),
            });
        }
        let reference = template.reference(namespace);
        let digest = template.digest();
        let key = keys::template(&reference);
        // Quick answer for a re-publish, before writing anything.
        if let Some(existing) = self.store.get_ref(&key).await? {
            return self.outcome(reference, existing, digest);
        }
        let _writing = self.store.lock(&keys::gc_lock(), LockMode::Shared).await?;
        let json = template.canonical_json();
        let stored = self.store.put(&mut json.as_bytes()).await?;
        debug_assert_eq!(
            stored.digest, digest,
            "a template's blob is its canonical JSON"
        );
        let _naming = self
            .store
            .lock(&keys::publishing(&reference), LockMode::Exclusive)
            .await?;
        if let Some(checkpoint) = self.store.get_ref(&keys::published(&reference)).await? {
            return self.outcome(reference, checkpoint, digest);
        }
        match self.store.create_ref(&key, &digest).await? {
            None => Ok(Published {
                reference,
                digest,
                created: true,
            }),
            Some(existing) => self.outcome(reference, existing, digest),
        }
    }

    fn outcome(
        &self,
        reference: TemplateRef,
        existing: Digest,
        digest: Digest,
    ) -> Result<Published, StoreError> {
        if existing == digest {
            Ok(Published {
                reference,
                digest,
                created: false,
            })
        } else {
            Err(StoreError::Immutable {
                reference: Box::new(reference),
                existing,
                new: digest,
            })
        }
    }

    /// The digest `reference` is published under.
    pub async fn resolve_digest(
        &self,
        reference: &TemplateRef,
    ) -> Result<Option<Digest>, StoreError> {
        self.store.get_ref(&keys::template(reference)).await
    }

    /// The template published under `reference`, read back and verified.
    pub async fn resolve(&self, reference: &TemplateRef) -> Result<Option<Template>, StoreError> {
        let Some(digest) = self.resolve_digest(reference).await? else {
            return Ok(None);
        };
        let key = keys::template(reference);
        let template = self.template(&digest).await?.ok_or(StoreError::Dangling {
            key: key.to_string(),
            digest,
        })?;
        Ok(Some(template))
    }

    /// A stored template by digest.
    pub async fn template(&self, digest: &Digest) -> Result<Option<Template>, StoreError> {
        let Some(bytes) = read_small(&*self.store, digest, MAX_TEMPLATE_BYTES, "template").await?
        else {
            return Ok(None);
        };
        let invalid = |reason: String| StoreError::Invalid {
            what: "template",
            location: digest.to_string(),
            reason,
        };
        let text = String::from_utf8(bytes).map_err(|_| invalid("not UTF-8".into()))?;
        let template = Template::from_json(&text).map_err(|e| invalid(e.to_string()))?;
        if template.digest() != *digest {
            return Err(invalid(format!(
                "it normalizes to `{}`: stored by an incompatible orgo",
                template.digest()
            )));
        }
        Ok(Some(template))
    }

    /// Every published ref in `namespace` (every namespace if `None`), sorted,
    /// with its digest.
    pub async fn list(
        &self,
        namespace: Option<&Name>,
    ) -> Result<Vec<(TemplateRef, Digest)>, StoreError> {
        refs_by_reference(&*self.store, keys::TEMPLATES, namespace).await
    }

    /// Unpublishes `reference`; `false` if it was not published. The template
    /// and its builds stay until [`crate::gc`] finds them unreferenced.
    pub async fn delete(&self, reference: &TemplateRef) -> Result<bool, StoreError> {
        self.store.delete_ref(&keys::template(reference)).await
    }
}

/// Every ref of `kind` (`<kind>/<namespace>/<name>/<version>`) in
/// `namespace` (every namespace if `None`), as the ref it names, sorted,
/// with its digest.
pub(crate) async fn refs_by_reference(
    store: &dyn Store,
    kind: &str,
    namespace: Option<&Name>,
) -> Result<Vec<(TemplateRef, Digest)>, StoreError> {
    let root = keys::root(kind);
    let prefix = match namespace {
        Some(ns) => root.join(ns.as_str())?,
        None => root.clone(),
    };
    let mut out = Vec::new();
    for (key, digest) in refs_under(store, &prefix).await? {
        let rest = key.strip_prefix(&root).unwrap_or_default();
        let reference = parse_key(rest).ok_or_else(|| StoreError::Invalid {
            what: "ref",
            location: key.to_string(),
            reason: format!("expected `{kind}/<namespace>/<name>/<version>`"),
        })?;
        out.push((reference, digest));
    }
    out.sort_by(|(a, _), (b, _)| {
        (a.namespace(), a.name(), a.version()).cmp(&(b.namespace(), b.name(), b.version()))
    });
    Ok(out)
}

fn parse_key(rest: &str) -> Option<TemplateRef> {
    let mut parts = rest.split('/');
    let (ns, name, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    format!("{ns}/{name}@{version}").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nothing_is_published_into_the_reserved_namespace() {
        let registry = Registry::new(Arc::new(crate::MemoryStore::new()));
        let template =
            Template::from_yaml("api_version: orgo.ai/v1\nname: python@1.0.0\n").expect("valid");
        let system: Name = RESERVED_NAMESPACE.parse().expect("a name");
        let refused = registry.publish(system, &template).await;
        assert!(
            matches!(&refused, Err(StoreError::Reserved { namespace }) if namespace == "system"),
            "{refused:?}"
        );
        let team: Name = "team".parse().expect("a name");
        assert!(
            registry
                .publish(team, &template)
                .await
                .expect("published")
                .created
        );
    }
}
