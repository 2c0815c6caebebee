//! A container's log text as the kubelet API asks for it (pure): the lines since a time, with
//! or without ACI's leading timestamps.

use chrono::{DateTime, Utc};

use crate::provider::aci::status::parse_time;

/// Keeps the lines at or after `since` (lines carry ACI's leading RFC 3339 timestamp then) and
/// strips the timestamps unless `keep_timestamps`.
pub(crate) fn filter_log(
    content: &str,
    since: Option<DateTime<Utc>>,
    keep_timestamps: bool,
) -> String {
    let stamped = since.is_some() || keep_timestamps;
    let mut out = String::new();
    for line in content.lines() {
        let (ts, rest) = match line.split_once(' ') {
            Some((ts, rest)) if stamped && parse_time(ts).is_some() => (parse_time(ts), rest),
            _ => (None, line),
        };
        if let (Some(since), Some(ts)) = (since, ts)
            && ts < since
        {
            continue;
        }
        out.push_str(if keep_timestamps { line } else { rest });
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_since_a_time_keep_newer_lines_and_drop_their_timestamps() {
        let content = "2026-11-27T07:00:00Z old line\n2026-11-27T07:05:00Z new line\n";
        let since = parse_time("2026-11-27T07:01:00Z");
        assert_eq!(filter_log(content, since, false), "new line\n");
        assert_eq!(
            filter_log(content, since, true),
            "2026-11-27T07:05:00Z new line\n"
        );
        assert_eq!(filter_log("plain\n", None, false), "plain\n");
    }
}
