//! The curated templates of the `system` namespace: files in the
//! repository (`templates/system/NAME.yaml`), compiled in, never published
//! into a store. `system/python@1.0.0` resolves here on any host.
//!
//! - `python`: Python 3 with pip, venv and uv.
//! - `nodejs`: Node.js 22 LTS with npm.
//! - `claude-code`: the Claude Code CLI on Node.js 22 LTS; needs the secret
//!   `anthropic_api_key` at launch (as `ANTHROPIC_API_KEY`).

use orgo_template::{Template, TemplateRef};

/// The namespace of curated templates.
pub const SYSTEM_NAMESPACE: &str = TemplateRef::SYSTEM_NAMESPACE;

/// Each curated template's file name in `templates/system/` and its text.
const FILES: &[(&str, &str)] = &[
    (
        "claude-code.yaml",
        include_str!("../../templates/system/claude-code.yaml"),
    ),
    (
        "nodejs.yaml",
        include_str!("../../templates/system/nodejs.yaml"),
    ),
    (
        "python.yaml",
        include_str!("../../templates/system/python.yaml"),
    ),
];

/// A curated template.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SystemTemplate {
    /// Its file in `templates/system/` (`python.yaml`).
    pub file: &'static str,
    /// The canonical template.
    pub template: Template,
}

impl SystemTemplate {
    /// `system/NAME@VERSION`.
    pub fn reference(&self) -> TemplateRef {
        self.template.reference(
            SYSTEM_NAMESPACE
                .parse()
                .expect("`system` is a valid namespace"),
        )
    }
}

/// Every curated template, ordered by ref.
pub fn system_templates() -> Vec<SystemTemplate> {
    FILES
        .iter()
        .map(|&(file, text)| SystemTemplate {
            file,
            template: Template::from_yaml(text)
                .expect("curated templates are valid (their unit tests parse each one)"),
        })
        .collect()
}

/// The curated template `reference` names (`system/NAME@VERSION`), or
/// `None` when it names another namespace or no curated template.
pub fn system_template(reference: &TemplateRef) -> Option<Template> {
    if reference.namespace().as_str() != SYSTEM_NAMESPACE {
        return None;
    }
    system_templates()
        .into_iter()
        .find(|t| &t.reference() == reference)
        .map(|t| t.template)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(text: &str) -> TemplateRef {
        text.parse().unwrap()
    }

    #[test]
    fn every_file_parses_and_its_name_is_its_file_name() {
        let all = system_templates();
        assert_eq!(all.len(), FILES.len());
        for t in &all {
            assert_eq!(
                format!("{}.yaml", t.template.template().name),
                t.file,
                "the file is named for the template"
            );
            assert_eq!(t.template.template().version.to_string(), "1.0.0");
            assert_eq!(
                t.template.template().publisher.as_ref().map(|p| p.as_str()),
                Some("orgo")
            );
            assert!(t.template.template().description.is_some(), "{}", t.file);
        }
        let refs: Vec<String> = all.iter().map(|t| t.reference().to_string()).collect();
        assert_eq!(
            refs,
            [
                "system/claude-code@1.0.0",
                "system/nodejs@1.0.0",
                "system/python@1.0.0",
            ]
        );
    }

    #[test]
    fn every_yaml_file_in_the_directory_is_listed() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates/system");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        on_disk.sort();
        let listed: Vec<&str> = FILES.iter().map(|(file, _)| *file).collect();
        assert_eq!(on_disk, listed);
    }

    #[test]
    fn refs_resolve_and_unknown_ones_do_not() {
        for t in system_templates() {
            assert_eq!(system_template(&t.reference()), Some(t.template));
        }
        for unknown in [
            "system/python@1.0.1",
            "system/ruby@1.0.0",
            "default/python@1.0.0",
            "team/nodejs@1.0.0",
            "python@1.0.0",
        ] {
            assert_eq!(system_template(&reference(unknown)), None, "{unknown}");
        }
    }

    #[test]
    fn they_set_nothing_this_runtime_does_not_enforce() {
        for t in system_templates() {
            let refused =
                crate::support::unsupported(&t.template, &crate::support::HostFacts::default());
            assert_eq!(refused, [], "{}", t.file);
        }
    }

    #[test]
    fn claude_code_needs_its_key_and_runs_on_the_nodejs_template_s_node() {
        let claude = system_template(&reference("system/claude-code@1.0.0")).unwrap();
        let node = system_template(&reference("system/nodejs@1.0.0")).unwrap();
        assert_eq!(claude.secrets().len(), 1);
        assert_eq!(claude.secrets()[0].name.as_str(), "anthropic_api_key");
        assert!(claude.secrets()[0].required);
        assert_eq!(
            serde_json::to_value(&claude.env()["ANTHROPIC_API_KEY"]).unwrap(),
            serde_json::json!({ "secret": "anthropic_api_key" })
        );
        assert_eq!(
            claude.build().run[0],
            node.build().run[0],
            "the same Node.js and npm, installed the same way"
        );
    }
}
