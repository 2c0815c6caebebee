//! A kubelet's `/metrics/resource` (Prometheus text format) -> the shadow pods' usage (pure), as
//! metrics-server computes it: memory is the container's working set
//! (`container_memory_working_set_bytes`), CPU is the rate of the cumulative counter
//! (`container_cpu_usage_seconds_total`) between two scrapes, over their sample timestamps. A
//! container seen once, or whose counter went back (it restarted), has no CPU rate yet and so no
//! sample: never a zero.
//!
//! [`parse`] reads the whole text strictly (a malformed line is an error naming it) and keeps the
//! two container series of one namespace; [`usage_between`] turns two scrapes of a node into one
//! pod's [`WorkloadUsage`]. No crate: the maintained Prometheus crates write the format, and the
//! one parser on crates.io (`prometheus-parse`, last released 2023) pulls `regex`,
//! `lazy_static` and an old `itertools` for the ~100 lines below.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::provider::contract::{ContainerUsage, WorkloadUsage};

/// The counter of a container's CPU time, in core-seconds.
pub(crate) const CPU_SERIES: &str = "container_cpu_usage_seconds_total";
/// A container's memory working set, in bytes.
pub(crate) const MEMORY_SERIES: &str = "container_memory_working_set_bytes";
/// The shortest time between two points a rate is taken over: two reads racing each other (two
/// clients scraping the gateway at once) give no rate rather than a noisy one.
const MIN_RATE_WINDOW: Duration = Duration::from_secs(1);

/// Text that is not the Prometheus text format. Not retryable: the kubelet (or whatever answered
/// in its place) speaks something else.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line} of /metrics/resource is not the Prometheus text format ({why}): {text:?}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub why: &'static str,
    /// The line, cut to 200 characters.
    pub text: String,
}

/// One sample: its value and the kubelet's timestamp (milliseconds since the epoch).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Point {
    /// The value.
    pub(crate) value: f64,
    /// When the kubelet measured it.
    pub(crate) at_ms: i64,
}

/// A container's two figures in one scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct ContainerPoints {
    /// `container_cpu_usage_seconds_total`.
    pub(crate) cpu: Option<Point>,
    /// `container_memory_working_set_bytes`.
    pub(crate) memory: Option<Point>,
}

/// One scrape of a node, for one namespace: pod name -> container name -> its points.
pub(crate) type Scrape = BTreeMap<String, BTreeMap<String, ContainerPoints>>;

/// One sample line: series name, labels, value and optional timestamp.
#[derive(Debug, PartialEq)]
struct Line<'a> {
    name: &'a str,
    labels: Vec<(&'a str, String)>,
    value: f64,
    at_ms: Option<i64>,
}

/// Splits a sample line; `Err` names what is wrong.
fn sample_line(line: &str) -> Result<Line<'_>, &'static str> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("no value")?;
    let name = &line[..name_end];
    let valid_name = |s: &str| {
        !s.is_empty()
            && !s.starts_with(|c: char| c.is_ascii_digit())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    if !valid_name(name) {
        return Err("bad series name");
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        loop {
            rest = rest.trim_start_matches([' ', ',']);
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=').ok_or("a label without '='")?;
            let key = rest[..eq].trim();
            if !valid_name(key) {
                return Err("bad label name");
            }
            rest = rest[eq + 1..]
                .trim_start()
                .strip_prefix('"')
                .ok_or("a label value without quotes")?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next().ok_or("an unterminated label value")? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next().ok_or("an unterminated label value")?.1 {
                        'n' => value.push('\n'),
                        c @ ('\\' | '"') => value.push(c),
                        _ => return Err("a bad escape in a label value"),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.push((key, value));
            rest = &rest[end + 1..];
        }
    }
    let mut fields = rest.split_whitespace();
    let value = match fields.next().ok_or("no value")? {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v
            .parse::<f64>()
            .map_err(|_| "a value that is not a number")?,
    };
    let at_ms = match fields.next() {
        Some(t) => Some(t.parse::<i64>().map_err(|_| "a bad timestamp")?),
        None => None,
    };
    if fields.next().is_some() {
        return Err("text after the timestamp");
    }
    Ok(Line {
        name,
        labels,
        value,
        at_ms,
    })
}

/// The container series of `namespace` in a kubelet's `/metrics/resource` text. A sample without
/// a timestamp (kubelets stamp every one) is skipped: its rate would have no time base.
pub(crate) fn parse(text: &str, namespace: &str) -> Result<Scrape, ParseError> {
    let mut scrape = Scrape::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let sample = sample_line(line).map_err(|why| ParseError {
            line: i + 1,
            why,
            text: raw.chars().take(200).collect(),
        })?;
        if sample.name != CPU_SERIES && sample.name != MEMORY_SERIES {
            continue;
        }
        let label = |key: &str| {
            sample
                .labels
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.as_str())
        };
        let (Some(ns), Some(pod), Some(container), Some(at_ms)) = (
            label("namespace"),
            label("pod"),
            label("container"),
            sample.at_ms,
        ) else {
            continue;
        };
        if ns != namespace || !sample.value.is_finite() {
            continue;
        }
        let points = scrape
            .entry(pod.to_string())
            .or_default()
            .entry(container.to_string())
            .or_default();
        let point = Some(Point {
            value: sample.value,
            at_ms,
        });
        if sample.name == CPU_SERIES {
            points.cpu = point;
        } else {
            points.memory = point;
        }
    }
    Ok(scrape)
}

/// A container's CPU rate in cores between two points of its counter; `None` when the newer is
/// less than [`MIN_RATE_WINDOW`] newer, or the counter went back (the container restarted: its
/// counter began again).
pub(crate) fn cpu_rate(before: Point, after: Point) -> Option<(f64, Duration)> {
    if after.at_ms <= before.at_ms || after.value < before.value {
        return None;
    }
    let elapsed = Duration::from_millis(u64::try_from(after.at_ms - before.at_ms).ok()?);
    if elapsed < MIN_RATE_WINDOW {
        return None;
    }
    Some((
        (after.value - before.value) / elapsed.as_secs_f64(),
        elapsed,
    ))
}

/// `pod`'s usage from the node's `previous` and `current` scrapes: each container with a CPU rate
/// between the two and a working set now, stamped with its newest timestamp; the window is the
/// longest time between a container's two points. `None` when no container has both figures.
pub(crate) fn usage_between(
    previous: &Scrape,
    current: &Scrape,
    pod: &str,
) -> Option<WorkloadUsage> {
    let now = current.get(pod)?;
    let before = previous.get(pod);
    let mut latest = i64::MIN;
    let mut window = Duration::ZERO;
    let mut containers = Vec::new();
    for (name, points) in now {
        let (Some(cpu), Some(memory)) = (points.cpu, points.memory) else {
            continue;
        };
        let Some((cores, elapsed)) = before
            .and_then(|b| b.get(name))
            .and_then(|b| b.cpu)
            .and_then(|b| cpu_rate(b, cpu))
        else {
            continue;
        };
        latest = latest.max(cpu.at_ms).max(memory.at_ms);
        window = window.max(elapsed);
        containers.push(ContainerUsage {
            name: name.clone(),
            cpu_cores: cores,
            cpu_core_seconds: 0.0,
            memory_bytes: memory.value.max(0.0).round() as u64,
        });
    }
    if containers.is_empty() {
        return None;
    }
    Some(WorkloadUsage {
        sampled_at: DateTime::<Utc>::from_timestamp_millis(latest)?,
        window,
        containers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two scrapes of a real kubelet 1.20.2 (the peers' test node), 3 s apart, while the `app`
    /// container of pod `burner` ran a busy loop and its `side` container slept.
    const FIRST: &str =
        include_str!("../../../tests/fixtures/kubelet/metrics-resource-1.20-first.txt");
    const SECOND: &str =
        include_str!("../../../tests/fixtures/kubelet/metrics-resource-1.20-second.txt");

    #[test]
    fn a_real_kubelets_metrics_resource_parses_into_each_containers_points() {
        let scrape = parse(FIRST, "default").unwrap();
        let burner = &scrape["burner"];
        assert_eq!(burner.keys().collect::<Vec<_>>(), ["app", "side"]);
        assert_eq!(
            burner["app"],
            ContainerPoints {
                cpu: Some(Point {
                    value: 2.046552067,
                    at_ms: 1796570249060
                }),
                memory: Some(Point {
                    value: 618496.0,
                    at_ms: 1796570249060
                }),
            }
        );
        assert!(
            parse(FIRST, "kube-system").unwrap().is_empty(),
            "only the namespace asked for is kept"
        );
    }

    #[test]
    fn two_scrapes_of_a_real_kubelet_give_the_rate_of_the_cpu_counter_and_the_working_set() {
        let (first, second) = (
            parse(FIRST, "default").unwrap(),
            parse(SECOND, "default").unwrap(),
        );
        let usage = usage_between(&first, &second, "burner").unwrap();
        assert_eq!(
            usage.window,
            Duration::from_millis(1796570252101 - 1796570249060)
        );
        assert_eq!(
            usage.sampled_at.timestamp_millis(),
            1796570252103,
            "the newest timestamp of the pod's containers"
        );
        let app = &usage.containers[0];
        assert_eq!((app.name.as_str(), app.memory_bytes), ("app", 618496));
        let expected = (4.708959633 - 2.046552067) / 3.041;
        assert!((app.cpu_cores - expected).abs() < 1e-9, "{}", app.cpu_cores);
        let side = &usage.containers[1];
        assert_eq!((side.name.as_str(), side.cpu_cores), ("side", 0.0));
        assert_eq!(side.memory_bytes, 745472);
    }

    #[test]
    fn a_single_scrape_gives_no_usage_rather_than_zero_cpu() {
        let first = parse(FIRST, "default").unwrap();
        assert_eq!(usage_between(&Scrape::new(), &first, "burner"), None);
        assert_eq!(
            usage_between(&first, &first, "burner"),
            None,
            "the same timestamps twice: no rate"
        );
        assert_eq!(usage_between(&first, &first, "nobody"), None);
    }

    #[test]
    fn a_counter_that_went_back_means_a_restart_and_no_rate_and_so_do_points_too_close() {
        let at = |value, at_ms| Point { value, at_ms };
        assert_eq!(cpu_rate(at(5.0, 1_000), at(1.0, 2_000)), None);
        assert_eq!(cpu_rate(at(1.0, 2_000), at(2.0, 2_000)), None);
        assert_eq!(
            cpu_rate(at(1.0, 2_000), at(1.2, 2_400)),
            None,
            "two reads 400 ms apart: no rate"
        );
        assert_eq!(
            cpu_rate(at(1.0, 1_000), at(2.0, 3_000)),
            Some((0.5, Duration::from_secs(2)))
        );
    }

    #[test]
    fn labels_with_escapes_and_odd_spacing_parse_and_other_series_are_ignored() {
        let text = "# TYPE x gauge\n\
            container_memory_working_set_bytes{ container=\"a\\\"b\" , namespace=\"ns\",pod=\"p\\\\q\",} 1.5e3 42\n\
            node_memory_working_set_bytes 1.0887274496e+10 42\n\
            scrape_error 0\n\
            container_cpu_usage_seconds_total{container=\"nostamp\",namespace=\"ns\",pod=\"p\"} 1\n";
        let scrape = parse(text, "ns").unwrap();
        assert_eq!(
            scrape["p\\q"]["a\"b"].memory,
            Some(Point {
                value: 1500.0,
                at_ms: 42
            })
        );
        assert!(
            !scrape.contains_key("p"),
            "a sample without a timestamp has no time base"
        );
    }

    #[test]
    fn a_line_that_is_not_the_text_format_is_an_error_naming_it() {
        for (text, why) in [
            (
                "container_cpu_usage_seconds_total{pod=\"p} 1 2",
                "an unterminated label value",
            ),
            (
                "container_cpu_usage_seconds_total{pod=p} 1 2",
                "a label value without quotes",
            ),
            (
                "container_cpu_usage_seconds_total 1 soon",
                "a bad timestamp",
            ),
            ("<html> Forbidden </html>", "bad series name"),
            ("up one", "a value that is not a number"),
        ] {
            let e = parse(&format!("# HELP x\n{text}\n"), "ns").unwrap_err();
            assert_eq!((e.line, e.why), (2, why), "{text}");
        }
    }
}
