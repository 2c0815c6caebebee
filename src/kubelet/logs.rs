//! `GET /containerLogs/{namespace}/{pod}/{container}`: what `kubectl logs` reads, with
//! `tailLines`, `sinceSeconds`, `sinceTime`, `timestamps`, `limitBytes` and `follow`.
//!
//! Providers have no streaming log API (ACI has none), so `follow` polls the provider: each poll
//! reads the newest lines (with timestamps, so repeated text stays distinguishable), finds where
//! the lines already sent end, and sends what follows; it stops when the workload terminates or
//! disappears, when the client goes away (the body is dropped) or when the gateway shuts down.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::kubelet::error::{Error, Result};
use crate::kubelet::pods::{self, Placed};
use crate::kubelet::server::Shared;
use crate::provider::{LogOptions, WorkloadPhase};

/// Lines read per follow poll: more lines than this between two polls are sent from the
/// newest `FOLLOW_WINDOW` on.
pub const FOLLOW_WINDOW: u64 = 1000;

/// How far back the lines already sent are matched in a new read.
const ANCHOR_LINES: usize = 20;

/// The start of a log read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// Lines of the last N seconds (`sinceSeconds`).
    Seconds(u64),
    /// Lines at or after this time (`sinceTime`).
    Time(DateTime<Utc>),
}

/// A `containerLogs` query (the kubelet's `PodLogOptions` parameters).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogQuery {
    /// Keep streaming new lines.
    pub follow: bool,
    /// Logs of the previous container instance.
    pub previous: bool,
    /// Prefix lines with their RFC 3339 timestamp.
    pub timestamps: bool,
    /// Only the last N lines (`None`: all).
    pub tail_lines: Option<u64>,
    /// Only lines since then.
    pub since: Option<Since>,
    /// Stop after this many bytes.
    pub limit_bytes: Option<u64>,
}

/// A Go `strconv.ParseBool` value, as the apiserver writes query booleans.
pub fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value {
        "" | "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        other => Err(Error::BadRequest(format!(
            "query parameter {key}={other:?} is not a boolean"
        ))),
    }
}

fn parse_int(key: &str, value: &str) -> Result<i64> {
    value.parse().map_err(|_| {
        Error::BadRequest(format!("query parameter {key}={value:?} is not an integer"))
    })
}

impl LogQuery {
    /// Parses the query string; unknown parameters are ignored, as the kubelet does.
    pub fn parse(query: &str) -> Result<LogQuery> {
        let mut q = LogQuery::default();
        let (mut since_seconds, mut since_time) = (None, None);
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "follow" => q.follow = parse_bool(&key, &value)?,
                "previous" => q.previous = parse_bool(&key, &value)?,
                "timestamps" => q.timestamps = parse_bool(&key, &value)?,
                "tailLines" => q.tail_lines = u64::try_from(parse_int(&key, &value)?).ok(),
                "limitBytes" => match parse_int(&key, &value)? {
                    n if n > 0 => q.limit_bytes = Some(n as u64),
                    _ => {
                        return Err(Error::BadRequest(format!(
                            "limitBytes={value} must be greater than 0"
                        )));
                    }
                },
                "sinceSeconds" => match parse_int(&key, &value)? {
                    n if n > 0 => since_seconds = Some(n as u64),
                    _ => {
                        return Err(Error::BadRequest(format!(
                            "sinceSeconds={value} must be greater than 0"
                        )));
                    }
                },
                "sinceTime" => {
                    let t = DateTime::parse_from_rfc3339(&value).map_err(|e| {
                        Error::BadRequest(format!(
                            "sinceTime={value:?} is not an RFC 3339 time: {e}"
                        ))
                    })?;
                    since_time = Some(t.with_timezone(&Utc));
                }
                _ => {}
            }
        }
        q.since = match (since_seconds, since_time) {
            (Some(_), Some(_)) => {
                return Err(Error::BadRequest(
                    "at most one of sinceSeconds or sinceTime may be given".into(),
                ));
            }
            (Some(s), None) => Some(Since::Seconds(s)),
            (None, Some(t)) => Some(Since::Time(t)),
            (None, None) => None,
        };
        Ok(q)
    }

    /// The provider's options at `now` (`sinceTime` becomes whole seconds, rounded up so the
    /// line at `sinceTime` is kept).
    pub fn provider_options(&self, now: DateTime<Utc>, timestamps: bool) -> LogOptions {
        let since_seconds = self.since.map(|since| match since {
            Since::Seconds(s) => s,
            Since::Time(t) => {
                let ms = (now - t).num_milliseconds().max(0) as u64;
                ms.div_ceil(1000)
            }
        });
        LogOptions {
            tail_lines: self.tail_lines,
            since_seconds,
            timestamps,
            previous: self.previous,
        }
    }
}

/// The lines of `current` that come after those already sent, whose last lines are `anchor`:
/// the latest position where `current` ends like the anchor (or, at its very start, like a
/// suffix of it). With no such position the log was replaced (rotated, restarted): all of it.
pub fn new_lines<'a>(anchor: &[String], current: &'a [String]) -> &'a [String] {
    if anchor.is_empty() {
        return current;
    }
    for end in (1..=current.len()).rev() {
        let m = anchor.len().min(end);
        if current[end - m..end] == anchor[anchor.len() - m..] {
            return &current[end..];
        }
    }
    current
}

/// `line` without a leading RFC 3339 timestamp (when it has one).
pub fn strip_timestamp(line: &str) -> &str {
    match line.split_once(' ') {
        Some((ts, rest)) if DateTime::parse_from_rfc3339(ts).is_ok() => rest,
        _ => line,
    }
}

fn split_lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_string).collect()
}

/// The handler.
pub async fn container_logs(
    State(shared): State<Arc<Shared>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let q = LogQuery::parse(query.as_deref().unwrap_or_default())?;
    let placed = pods::find(shared.workloads.as_ref(), &namespace, &pod, &container).await?;
    if q.previous && q.follow {
        // A previous instance writes no more: following it is reading it.
        let opts = q.provider_options(Utc::now(), q.timestamps);
        let text = placed
            .provider
            .logs(&placed.workload, &placed.container, &opts)
            .await
            .map_err(|e| placed.error(e))?;
        return Ok((
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8",
            )],
            text,
        )
            .into_response());
    }
    let headers = [(
        axum::http::header::CONTENT_TYPE,
        "text/plain; charset=utf-8",
    )];
    if !q.follow {
        let opts = q.provider_options(Utc::now(), q.timestamps);
        let mut text = placed
            .provider
            .logs(&placed.workload, &placed.container, &opts)
            .await
            .map_err(|e| placed.error(e))?
            .into_bytes();
        if let Some(limit) = q.limit_bytes {
            text.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        }
        return Ok((headers, text).into_response());
    }
    let opts = q.provider_options(Utc::now(), true);
    let first = placed
        .provider
        .logs(&placed.workload, &placed.container, &opts)
        .await
        .map_err(|e| placed.error(e))?;
    let lines = split_lines(&first);
    let follow = Follow {
        placed: Arc::new(placed),
        anchor: lines[lines.len().saturating_sub(ANCHOR_LINES)..].to_vec(),
        timestamps: q.timestamps,
        every: shared.follow_every,
        shutdown: shared.shutdown.clone(),
        done: false,
    };
    let first = follow.render(&lines);
    let rest = futures::stream::unfold(follow, |mut f| async move {
        f.next().await.map(|chunk| (chunk, f))
    });
    let stream = futures::stream::once(async move { first })
        .chain(rest)
        .filter(|chunk| futures::future::ready(!chunk.is_empty()));
    let stream = limit_bytes(stream, q.limit_bytes).map(Ok::<_, std::convert::Infallible>);
    Ok((headers, Body::from_stream(stream)).into_response())
}

/// Ends `stream` after `limit` bytes, cutting the last chunk.
fn limit_bytes(
    stream: impl futures::Stream<Item = Bytes> + Send,
    limit: Option<u64>,
) -> impl futures::Stream<Item = Bytes> + Send {
    let left = limit.unwrap_or(u64::MAX);
    stream.scan(left, |left, mut chunk| {
        if *left == 0 {
            return futures::future::ready(None);
        }
        if chunk.len() as u64 > *left {
            chunk.truncate(*left as usize);
        }
        *left -= chunk.len() as u64;
        futures::future::ready(Some(chunk))
    })
}

/// The state of one followed log.
struct Follow {
    placed: Arc<Placed>,
    anchor: Vec<String>,
    timestamps: bool,
    every: Duration,
    shutdown: tokio_util::sync::CancellationToken,
    done: bool,
}

impl Drop for Follow {
    fn drop(&mut self) {
        tracing::debug!(pod = %self.placed.key, done = self.done, "kubelet API: stopped following logs");
    }
}

impl Follow {
    fn render(&self, lines: &[String]) -> Bytes {
        let mut out = String::new();
        for line in lines {
            out.push_str(if self.timestamps {
                line
            } else {
                strip_timestamp(line)
            });
            out.push('\n');
        }
        Bytes::from(out)
    }

    /// The next chunk (possibly empty); `None` when following is over.
    async fn next(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        tokio::select! {
            _ = self.shutdown.cancelled() => return None,
            _ = tokio::time::sleep(self.every) => {}
        }
        let p = self.placed.clone();
        // Whether the workload is over, read before the lines so its last lines are in them.
        let over = match p.provider.status(std::slice::from_ref(&p.workload)).await {
            Ok(statuses) => statuses.get(&p.workload).is_none_or(|s| {
                matches!(
                    s.phase,
                    WorkloadPhase::Succeeded | WorkloadPhase::Failed | WorkloadPhase::Rejected(_)
                )
            }),
            Err(e) if e.is_retryable() => false,
            Err(e) => {
                tracing::warn!(pod = %p.key, error = %e, "kubelet API: following logs stops: the workload status cannot be read");
                return None;
            }
        };
        let opts = LogOptions {
            tail_lines: Some(FOLLOW_WINDOW),
            since_seconds: None,
            timestamps: true,
            previous: false,
        };
        let lines = match p.provider.logs(&p.workload, &p.container, &opts).await {
            Ok(text) => split_lines(&text),
            Err(e) if e.is_retryable() => return Some(Bytes::new()),
            Err(e) => {
                tracing::info!(pod = %p.key, error = %e, "kubelet API: following logs stops");
                return None;
            }
        };
        let fresh = new_lines(&self.anchor, &lines);
        let chunk = self.render(fresh);
        if !fresh.is_empty() {
            self.anchor = lines[lines.len().saturating_sub(ANCHOR_LINES)..].to_vec();
        }
        self.done = over;
        Some(chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn the_query_the_apiserver_sends_parses_into_log_options() {
        let q =
            LogQuery::parse("follow=true&tailLines=1&timestamps=1&limitBytes=500&container=app")
                .unwrap();
        assert_eq!(
            q,
            LogQuery {
                follow: true,
                timestamps: true,
                tail_lines: Some(1),
                limit_bytes: Some(500),
                ..Default::default()
            }
        );
        assert_eq!(LogQuery::parse("").unwrap(), LogQuery::default());
    }

    #[test]
    fn since_time_becomes_whole_seconds_rounded_up() {
        let q = LogQuery::parse("sinceTime=2026-11-27T07%3A00%3A00Z").unwrap();
        let now = DateTime::parse_from_rfc3339("2026-11-27T07:00:10.200Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(q.provider_options(now, false).since_seconds, Some(11));
        let q = LogQuery::parse("sinceSeconds=30").unwrap();
        assert_eq!(
            q.provider_options(now, true),
            LogOptions {
                tail_lines: None,
                since_seconds: Some(30),
                timestamps: true,
                previous: false,
            }
        );
    }

    #[test]
    fn malformed_or_contradictory_parameters_are_bad_requests() {
        for bad in [
            "follow=maybe",
            "tailLines=x",
            "sinceSeconds=0",
            "limitBytes=-1",
            "sinceTime=yesterday",
            "sinceSeconds=5&sinceTime=2026-01-01T00:00:00Z",
        ] {
            assert!(
                matches!(LogQuery::parse(bad), Err(Error::BadRequest(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_negative_tail_means_every_line() {
        assert_eq!(LogQuery::parse("tailLines=-1").unwrap().tail_lines, None);
    }

    #[test]
    fn only_the_lines_after_those_already_sent_are_new() {
        let anchor = v(&["t1 a", "t2 b"]);
        assert_eq!(
            new_lines(&anchor, &v(&["t1 a", "t2 b", "t3 c", "t4 d"])),
            v(&["t3 c", "t4 d"]).as_slice()
        );
        assert!(new_lines(&anchor, &v(&["t1 a", "t2 b"])).is_empty());
        // The read window moved past the start of the anchor: the overlap is at its start.
        assert_eq!(
            new_lines(&anchor, &v(&["t2 b", "t3 c"])),
            v(&["t3 c"]).as_slice()
        );
    }

    #[test]
    fn repeated_text_is_matched_at_its_latest_position() {
        let anchor = v(&["x", "a"]);
        assert_eq!(
            new_lines(&anchor, &v(&["x", "a", "a"])),
            v(&["a"]).as_slice()
        );
    }

    #[test]
    fn a_replaced_log_is_sent_whole() {
        assert_eq!(
            new_lines(&v(&["t1 old"]), &v(&["t9 new"])),
            v(&["t9 new"]).as_slice()
        );
        assert_eq!(new_lines(&[], &v(&["a"])), v(&["a"]).as_slice());
    }

    #[test]
    fn a_timestamp_is_stripped_only_when_it_is_one() {
        assert_eq!(
            strip_timestamp("2026-11-27T07:00:00.000000000Z hello world"),
            "hello world"
        );
        assert_eq!(strip_timestamp("hello world"), "hello world");
    }

    #[tokio::test]
    async fn a_byte_limit_cuts_the_stream_and_ends_it() {
        let chunks = futures::stream::iter(vec![
            Bytes::from("abc\n"),
            Bytes::from("defg\n"),
            Bytes::from("h\n"),
        ]);
        let got: Vec<Bytes> = limit_bytes(chunks, Some(6)).collect().await;
        assert_eq!(got, vec![Bytes::from("abc\n"), Bytes::from("de")]);
    }
}
