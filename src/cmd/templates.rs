//! `medscribe templates`: the letter templates, built-in and the user's own.

use std::process::ExitCode;

use anyhow::Result;
use medscribe_pipeline::DataDir;

/// Lists the templates.
pub fn list_templates() -> Result<ExitCode> {
    let set = super::load_templates();
    for t in set.templates() {
        let sections: Vec<String> = t
            .sections
            .iter()
            .map(|s| {
                if s.required {
                    format!("{}*", s.key)
                } else {
                    s.key.clone()
                }
            })
            .collect();
        println!(
            "{:<16} {} (LOINC {} {}); sections: {}  [{}]",
            t.name,
            t.title,
            t.loinc.code,
            t.loinc.display,
            sections.join(", "),
            t.source
        );
    }
    println!(
        "* required. Your own templates: {}/NAME.json (same name overrides).",
        DataDir::user_templates_dir().display()
    );
    Ok(ExitCode::SUCCESS)
}
