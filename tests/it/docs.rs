//! The operator docs stay true to the code: every metric the gateway registers is documented in
//! docs/metrics.md, and every relative link in README.md and docs/ leads to a file that exists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The names registered in src/metrics.rs (`registry.register("name", ...)`), without the
/// registry's `burstgate_` prefix. Read from the source so that a metric without samples yet
/// (an empty label family shows nothing in a scrape) is not missed.
fn registered_metrics() -> BTreeSet<String> {
    let source = std::fs::read_to_string(repo().join("src/metrics.rs")).unwrap();
    assert!(
        source.contains("Registry::with_prefix(\"burstgate\")"),
        "the registry prefix changed: update this test"
    );
    source
        .split(".register(")
        .skip(1)
        .map(|call| {
            call.trim_start()
                .strip_prefix('"')
                .and_then(|c| c.split('"').next())
                .expect("a metric name literal")
                .to_owned()
        })
        .collect()
}

/// The `burstgate_*` names in the first column of docs/metrics.md's tables.
fn documented_metrics(doc: &str) -> BTreeSet<String> {
    doc.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|n| n.starts_with("burstgate_"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_registered_metric_is_documented_in_docs_metrics_md() {
    let names = registered_metrics();
    assert!(names.len() >= 19, "{names:?}");
    let doc = std::fs::read_to_string(repo().join("docs/metrics.md")).unwrap();
    let documented = documented_metrics(&doc);
    // Counters are scraped as `<name>_total`: the doc names them so.
    let counters: BTreeSet<String> =
        burstgate::metrics::to_classic_text(&burstgate::metrics::Metrics::new().encode())
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
            .map(str::to_owned)
            .collect();
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| {
            !documented.contains(&format!("burstgate_{n}"))
                && !documented.contains(&format!("burstgate_{n}_total"))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/metrics.md has no row for {missing:?}: add one (type, labels, meaning)"
    );
    for counter in counters {
        assert!(
            documented.contains(&counter),
            "docs/metrics.md must name the counter as scraped: {counter}"
        );
    }
}

#[test]
fn docs_metrics_md_names_no_metric_the_gateway_does_not_have() {
    let names = registered_metrics();
    let doc = std::fs::read_to_string(repo().join("docs/metrics.md")).unwrap();
    let unknown: Vec<String> = documented_metrics(&doc)
        .into_iter()
        .filter(|d| {
            let bare = d.strip_prefix("burstgate_").unwrap();
            !names.contains(bare)
                && !bare
                    .strip_suffix("_total")
                    .is_some_and(|b| names.contains(b))
        })
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/metrics.md documents metrics src/metrics.rs does not register: {unknown:?}"
    );
}

/// Relative link targets (`](path)` or `](path#anchor)`) in a markdown file.
fn relative_links(text: &str) -> Vec<String> {
    text.split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .map(|target| target.split('#').next().unwrap().to_owned())
        .filter(|t| !t.is_empty() && !t.contains("://") && !t.starts_with("mailto:"))
        .collect()
}

#[test]
fn relative_links_in_the_readme_and_docs_lead_to_files_that_exist() {
    let mut files = vec![repo().join("README.md")];
    files.extend(
        std::fs::read_dir(repo().join("docs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "md")),
    );
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let dir = file.parent().unwrap_or(Path::new("."));
        for link in relative_links(&text) {
            if !dir.join(&link).exists() {
                broken.push(format!(
                    "{}: {link}",
                    file.strip_prefix(repo()).unwrap().display()
                ));
            }
        }
    }
    assert!(broken.is_empty(), "broken links: {broken:#?}");
    for doc in [
        "docs/providers.md",
        "docs/metrics.md",
        "docs/quickstart.md",
        "docs/deployment.md",
    ] {
        let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
        assert!(
            readme.contains(&format!("]({doc})")),
            "README.md links {doc}"
        );
    }
}

#[test]
fn the_policy_example_in_docs_providers_md_loads_with_every_provider_block() {
    let doc = std::fs::read_to_string(repo().join("docs/providers.md")).unwrap();
    let example = doc
        .split("```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/providers.md opens with a ```yaml policy example");
    let policy = burstgate::policy::load_files(&[("docs/providers.md".into(), example.to_owned())])
        .unwrap_or_else(|err| panic!("the example in docs/providers.md does not load: {err}"));
    for target in &policy.targets {
        assert!(
            !matches!(
                target.connection,
                burstgate::policy::checked::Connection::None
            ),
            "{} has no provider block",
            target.name
        );
    }
    let providers: BTreeSet<String> = policy
        .targets
        .iter()
        .map(|t| t.provider.to_string())
        .collect();
    assert_eq!(
        providers,
        BTreeSet::from(["aci".into(), "cluster".into(), "fargate".into()])
    );
}
