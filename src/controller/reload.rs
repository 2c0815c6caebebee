//! Policy hot reload: watches the policy directory and publishes each new good policy to the
//! gateway; a bad edit keeps the last good policy serving and says so in the log and in a Warning
//! Event (`PolicyInvalid`) on the node.
//!
//! The directory is polled every [`POLL_PERIOD`]: the names, sizes, modification times and
//! resolved paths of its `*.yaml`/`*.yml` files. Polling is robust where file notifications are
//! not: a ConfigMap volume swaps a `..data` symlink, which changes every file's resolved path at
//! once. A half-written file just fails once; the next change loads it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::controller::context::Gateway;
use crate::controller::events::{Event, EventReason};
use crate::controller::node::node_event;
use crate::policy::{LoadError, Policy, load_dir};

/// How often the directory is looked at.
pub const POLL_PERIOD: Duration = Duration::from_secs(2);

/// What looking at changed policy files led to. This is the hook for metrics
/// (`burstgate_policy_reloads_total{outcome}` via [`ReloadOutcome::metric_label`]).
#[derive(Debug)]
pub enum ReloadOutcome {
    /// A new policy serves from now on.
    Loaded {
        /// Its hash.
        hash: String,
        /// The hash of the policy it replaced.
        previous: Option<String>,
        /// Its files.
        files: Vec<String>,
        /// How many targets it defines.
        targets: usize,
    },
    /// The files changed but make the same policy (same hash): nothing was published.
    Unchanged {
        /// The hash still serving.
        hash: String,
    },
    /// The files are not a valid policy: the last good one (if any) keeps serving.
    Rejected {
        /// Every problem, `file:line: field: message`.
        error: LoadError,
        /// The hash still serving, if a policy has ever loaded.
        serving: Option<String>,
    },
}

impl ReloadOutcome {
    /// `loaded`, `unchanged` or `rejected`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ReloadOutcome::Loaded { .. } => "loaded",
            ReloadOutcome::Unchanged { .. } => "unchanged",
            ReloadOutcome::Rejected { .. } => "rejected",
        }
    }

    /// Logs the outcome: info with the new hash, warn with every problem line (and what still
    /// serves), debug when nothing changed.
    pub fn log(&self, dir: &Path) {
        let dir = dir.display();
        match self {
            ReloadOutcome::Loaded {
                hash,
                previous,
                files,
                targets,
            } => {
                tracing::info!(%dir, %hash, previous = previous.as_deref().unwrap_or("none"), files = files.len(), targets, "policy loaded");
            }
            ReloadOutcome::Unchanged { hash } => {
                tracing::debug!(%dir, %hash, "policy files changed, policy did not")
            }
            ReloadOutcome::Rejected { error, serving } => {
                let serving = serving
                    .as_deref()
                    .unwrap_or("nothing (the node stays NotReady)");
                tracing::warn!(%dir, %serving, "policy files rejected; the last good policy keeps serving");
                for line in error.to_string().lines() {
                    tracing::warn!(%dir, %serving, problem = %line, "policy problem: {line}");
                }
            }
        }
    }

    /// The Event the outcome deserves on the node (`PolicyLoaded` or `PolicyInvalid`); none when
    /// unchanged.
    pub fn event(&self) -> Option<Event> {
        match self {
            ReloadOutcome::Loaded {
                hash,
                files,
                targets,
                ..
            } => Some(Event::new(
                EventReason::PolicyLoaded,
                format!(
                    "policy {hash} loaded: {targets} targets from {}",
                    files.join(", ")
                ),
            )),
            ReloadOutcome::Unchanged { .. } => None,
            ReloadOutcome::Rejected { error, serving } => {
                let serving = match serving {
                    Some(hash) => format!("still serving policy {hash}"),
                    None => "no policy serves yet".to_owned(),
                };
                Some(Event::new(
                    EventReason::PolicyInvalid,
                    format!("policy files rejected, {serving}:\n{error}"),
                ))
            }
        }
    }
}

/// One policy file as last seen.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct FileStamp {
    path: PathBuf,
    /// Where its symlinks lead (a ConfigMap swap changes this).
    resolved: Option<PathBuf>,
    len: u64,
    modified: Option<SystemTime>,
}

/// The files of the directory as last seen, or why it could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint(Result<Vec<FileStamp>, String>);

/// Looks at `dir`'s policy files (the ones [`load_dir`] reads) without reading them.
fn fingerprint(dir: &Path) -> Fingerprint {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => return Fingerprint(Err(err.to_string())),
    };
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .filter_map(|path| {
            let meta = std::fs::metadata(&path)
                .ok()
                .filter(std::fs::Metadata::is_file)?;
            let resolved = std::fs::canonicalize(&path).ok();
            Some(FileStamp {
                path,
                resolved,
                len: meta.len(),
                modified: meta.modified().ok(),
            })
        })
        .collect();
    files.sort();
    Fingerprint(Ok(files))
}

/// Loads the policy directory into a watch channel, keeping the last good policy.
pub struct PolicyReloader {
    dir: PathBuf,
    tx: watch::Sender<Option<Arc<Policy>>>,
    seen: Option<Fingerprint>,
}

impl PolicyReloader {
    /// A reloader of `dir` publishing to `tx` (whose receiver is the gateway's `policy`).
    pub fn new(dir: impl Into<PathBuf>, tx: watch::Sender<Option<Arc<Policy>>>) -> Self {
        PolicyReloader {
            dir: dir.into(),
            tx,
            seen: None,
        }
    }

    /// The watched directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reloads if the directory's files changed since the last look (always, the first time);
    /// `None` when they did not.
    pub fn poll(&mut self) -> Option<ReloadOutcome> {
        let now = fingerprint(&self.dir);
        if self.seen.as_ref() == Some(&now) {
            return None;
        }
        self.seen = Some(now);
        Some(self.reload())
    }

    /// Loads the directory now: publishes a policy with a new hash, keeps the last good one on
    /// any error.
    pub fn reload(&mut self) -> ReloadOutcome {
        let serving = self.tx.borrow().as_ref().map(|p| p.hash.clone());
        match load_dir(&self.dir) {
            Ok(policy) if Some(&policy.hash) == serving.as_ref() => {
                ReloadOutcome::Unchanged { hash: policy.hash }
            }
            Ok(policy) => {
                let outcome = ReloadOutcome::Loaded {
                    hash: policy.hash.clone(),
                    previous: serving,
                    files: policy.files.clone(),
                    targets: policy.targets.len(),
                };
                self.tx.send_replace(Some(Arc::new(policy)));
                outcome
            }
            Err(error) => ReloadOutcome::Rejected { error, serving },
        }
    }
}

/// Polls every [`POLL_PERIOD`] until `shutdown`, starting at once: logs each outcome, reports it
/// as an Event on `gw`'s node, and hands it to `observe` (for metrics).
pub async fn run_reload(
    mut reloader: PolicyReloader,
    gw: Arc<Gateway>,
    shutdown: CancellationToken,
    mut observe: impl FnMut(&ReloadOutcome) + Send,
) {
    let mut tick = tokio::time::interval(POLL_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(outcome) = reloader.poll() else {
            continue;
        };
        outcome.log(reloader.dir());
        observe(&outcome);
        if let Some(event) = outcome.event() {
            let published = tokio::select! {
                () = shutdown.cancelled() => return,
                published = node_event(&gw, &event) => published,
            };
            if let Err(err) = published {
                tracing::warn!(error = %err, reason = %event.reason, "could not publish the policy event on the node");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_yaml(target: &str) -> String {
        format!(
            "apiVersion: burstgate.io/v1alpha1\nkind: BurstPolicy\nmetadata: {{name: t}}\nspec:\n  targets:\n    - name: {target}\n      provider: sim\n      region: local\n"
        )
    }

    fn reloader(dir: &Path) -> (PolicyReloader, watch::Receiver<Option<Arc<Policy>>>) {
        let (tx, rx) = watch::channel(None);
        (PolicyReloader::new(dir, tx), rx)
    }

    fn serving(rx: &watch::Receiver<Option<Arc<Policy>>>) -> Option<String> {
        rx.borrow().as_ref().map(|p| p.hash.clone())
    }

    #[test]
    fn a_bad_edit_keeps_the_last_good_policy_and_a_good_one_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.yaml");
        std::fs::write(&file, policy_yaml("first")).unwrap();
        let (mut reloader, mut rx) = reloader(dir.path());

        let Some(ReloadOutcome::Loaded {
            hash: first,
            previous: None,
            targets: 1,
            ..
        }) = reloader.poll()
        else {
            panic!("the first look loads the policy")
        };
        assert_eq!(serving(&rx), Some(first.clone()));
        assert!(reloader.poll().is_none(), "no change, no reload");
        rx.mark_unchanged();

        std::fs::write(&file, "apiVersion: burstgate.io/v1alpha1\nkind: BurstPolicy\nmetadata: {name: t}\nspec:\n  targets:\n    - name: broken\n      provider: nowhere\n      region: local\n").unwrap();
        let outcome = reloader.poll().expect("the edit is seen");
        let ReloadOutcome::Rejected {
            error,
            serving: still,
        } = &outcome
        else {
            panic!("rejected: {outcome:?}")
        };
        assert_eq!(still.as_deref(), Some(first.as_str()));
        let text = error.to_string();
        assert!(
            text.contains("p.yaml:") && text.contains("provider"),
            "file:line: field: message lines: {text}"
        );
        assert_eq!(
            serving(&rx),
            Some(first.clone()),
            "the last good policy keeps serving"
        );
        assert!(!rx.has_changed().unwrap(), "nothing was published");
        let Event { reason, note } = outcome.event().unwrap();
        assert_eq!(reason, EventReason::PolicyInvalid);
        assert!(note.contains(&first) && note.contains("provider"), "{note}");

        std::fs::write(&file, policy_yaml("second")).unwrap();
        let Some(ReloadOutcome::Loaded {
            hash: second,
            previous,
            ..
        }) = reloader.poll()
        else {
            panic!("the fix loads")
        };
        assert_ne!(second, first);
        assert_eq!(previous, Some(first));
        assert_eq!(serving(&rx), Some(second));
        assert!(rx.has_changed().unwrap());
    }

    #[test]
    fn rewriting_the_same_policy_publishes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.yaml");
        std::fs::write(&file, policy_yaml("same")).unwrap();
        let (mut reloader, mut rx) = reloader(dir.path());
        assert_eq!(reloader.poll().map(|o| o.metric_label()), Some("loaded"));
        rx.mark_unchanged();

        std::fs::write(&file, policy_yaml("same")).unwrap();
        let later = SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(later)
            .unwrap();
        let outcome = reloader.poll().expect("the touched file is seen");
        assert_eq!(outcome.metric_label(), "unchanged");
        assert!(outcome.event().is_none());
        assert!(
            !rx.has_changed().unwrap(),
            "an identical policy is not re-sent"
        );
    }

    #[test]
    fn a_swapped_configmap_symlink_is_seen_as_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let (v1, v2) = (dir.path().join("..v1"), dir.path().join("..v2"));
        std::fs::create_dir(&v1).unwrap();
        std::fs::create_dir(&v2).unwrap();
        std::fs::write(v1.join("p.yaml"), policy_yaml("one")).unwrap();
        std::fs::write(v2.join("p.yaml"), policy_yaml("two")).unwrap();
        // The layout kubelet gives a ConfigMap volume: p.yaml -> ..data/p.yaml, ..data -> ..v1.
        std::os::unix::fs::symlink("..v1", dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/p.yaml", dir.path().join("p.yaml")).unwrap();
        let (mut reloader, rx) = reloader(dir.path());
        assert_eq!(reloader.poll().map(|o| o.metric_label()), Some("loaded"));
        let one = serving(&rx).unwrap();

        std::os::unix::fs::symlink("..v2", dir.path().join("..data.tmp")).unwrap();
        std::fs::rename(dir.path().join("..data.tmp"), dir.path().join("..data")).unwrap();
        assert_eq!(reloader.poll().map(|o| o.metric_label()), Some("loaded"));
        assert_ne!(serving(&rx).unwrap(), one);
    }

    #[test]
    fn a_missing_directory_is_rejected_and_serves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut reloader, rx) = reloader(&dir.path().join("absent"));
        let outcome = reloader.poll().expect("the first look always reloads");
        assert!(
            matches!(outcome, ReloadOutcome::Rejected { serving: None, .. }),
            "{outcome:?}"
        );
        assert!(serving(&rx).is_none());
        assert!(
            reloader.poll().is_none(),
            "still missing: no new attempt, no new warning"
        );
    }
}
