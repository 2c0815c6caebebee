//! Azure Monitor's metrics of a container group -> its usage (pure): the answer of
//! `GET {group id}/providers/Microsoft.Insights/metrics` (Metrics_List, api-version 2018-01-01)
//! for `CpuUsage` (millicores) and `MemoryUsage` (bytes), averaged per minute and split by the
//! `containerName` dimension. The newest minute with both figures is a container's sample.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::provider::contract::{ContainerUsage, WorkloadUsage};

/// The metric names asked for.
pub(crate) const METRIC_NAMES: &str = "CpuUsage,MemoryUsage";
/// The grain asked for (Azure Monitor's finest for container groups).
pub(crate) const GRAIN: Duration = Duration::from_secs(60);
/// How far back the query reaches: Azure Monitor publishes a minute a few minutes late.
pub(crate) const LOOKBACK: Duration = Duration::from_secs(10 * 60);

/// The answer of Metrics_List.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct MetricsResponse {
    /// One entry per metric asked for.
    #[serde(default)]
    pub(crate) value: Vec<Metric>,
}

/// One metric.
#[derive(Debug, Deserialize)]
pub(crate) struct Metric {
    /// Its name (`CpuUsage`).
    pub(crate) name: Localizable,
    /// One series per dimension value (per container).
    #[serde(default)]
    pub(crate) timeseries: Vec<TimeSeries>,
}

/// A name with its localized form.
#[derive(Debug, Deserialize)]
pub(crate) struct Localizable {
    /// The invariant value.
    pub(crate) value: String,
}

/// One series: its dimension values and its points.
#[derive(Debug, Deserialize)]
pub(crate) struct TimeSeries {
    /// Dimension values (`containerName`).
    #[serde(default)]
    pub(crate) metadatavalues: Vec<MetadataValue>,
    /// Points, oldest first.
    #[serde(default)]
    pub(crate) data: Vec<Point>,
}

/// A dimension value.
#[derive(Debug, Deserialize)]
pub(crate) struct MetadataValue {
    /// The dimension (`containername`, in Azure Monitor's lower case).
    pub(crate) name: Localizable,
    /// Its value.
    #[serde(default)]
    pub(crate) value: Option<String>,
}

/// One point: its minute and the average over it (absent for a minute with no data).
#[derive(Debug, Deserialize)]
pub(crate) struct Point {
    /// Start of the minute.
    #[serde(rename = "timeStamp")]
    pub(crate) time_stamp: String,
    /// The average over the minute.
    #[serde(default)]
    pub(crate) average: Option<f64>,
}

/// The newest point with a value per container of `metric`: (container, minute start, value).
fn newest(response: &MetricsResponse, metric: &str) -> Vec<(String, DateTime<Utc>, f64)> {
    response
        .value
        .iter()
        .filter(|m| m.name.value.eq_ignore_ascii_case(metric))
        .flat_map(|m| &m.timeseries)
        .filter_map(|series| {
            let container = series
                .metadatavalues
                .iter()
                .find(|d| d.name.value.eq_ignore_ascii_case("containername"))?
                .value
                .clone()?;
            let point = series.data.iter().rev().find(|p| p.average.is_some())?;
            let at = DateTime::parse_from_rfc3339(&point.time_stamp).ok()?;
            Some((container, at.with_timezone(&Utc), point.average?))
        })
        .collect()
}

/// The usage in `response`, read at `now`: each container with both a CPU and a memory point,
/// sampled at the end of the newer minute (at most `now`); `None` when no container has both
/// yet (Azure Monitor has nothing for a group started a moment ago).
pub(crate) fn usage_of(response: &MetricsResponse, now: DateTime<Utc>) -> Option<WorkloadUsage> {
    let memory = newest(response, "MemoryUsage");
    let mut latest: Option<DateTime<Utc>> = None;
    let containers: Vec<ContainerUsage> = newest(response, "CpuUsage")
        .into_iter()
        .filter_map(|(name, cpu_at, millicores)| {
            let (_, memory_at, bytes) = memory.iter().find(|(n, _, _)| *n == name)?;
            let at = cpu_at.max(*memory_at);
            latest = Some(latest.map_or(at, |l| l.max(at)));
            Some(ContainerUsage {
                name,
                cpu_cores: (millicores / 1000.0).max(0.0),
                cpu_core_seconds: 0.0,
                memory_bytes: bytes.max(0.0).round() as u64,
            })
        })
        .collect();
    let minute_end = latest? + chrono::Duration::from_std(GRAIN).expect("a minute");
    Some(WorkloadUsage {
        sampled_at: minute_end.min(now),
        window: GRAIN,
        containers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn series(container: &str, points: serde_json::Value) -> serde_json::Value {
        json!({"metadatavalues": [{"name": {"value": "containername", "localizedValue": "containername"}, "value": container}], "data": points})
    }

    fn response() -> MetricsResponse {
        serde_json::from_value(json!({
            "cost": 0, "timespan": "2026-12-06T10:00:00Z/2026-12-06T10:10:00Z", "interval": "PT1M",
            "namespace": "Microsoft.ContainerInstance/containerGroups", "resourceregion": "eastus",
            "value": [
                {"id": "x/providers/Microsoft.Insights/metrics/CpuUsage", "type": "Microsoft.Insights/metrics",
                 "name": {"value": "CpuUsage", "localizedValue": "CPU Usage"}, "unit": "Count", "errorCode": "Success",
                 "timeseries": [
                    series("app", json!([{"timeStamp": "2026-12-06T10:07:00Z", "average": 120.0},
                                         {"timeStamp": "2026-12-06T10:08:00Z", "average": 250.0},
                                         {"timeStamp": "2026-12-06T10:09:00Z"}])),
                    series("sidecar", json!([{"timeStamp": "2026-12-06T10:08:00Z", "average": 5.0}]))]},
                {"id": "x/providers/Microsoft.Insights/metrics/MemoryUsage", "type": "Microsoft.Insights/metrics",
                 "name": {"value": "MemoryUsage", "localizedValue": "Memory Usage"}, "unit": "Bytes", "errorCode": "Success",
                 "timeseries": [series("app", json!([{"timeStamp": "2026-12-06T10:08:00Z", "average": 52428800.0}]))]}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn each_container_gets_its_newest_minute_with_both_figures_in_cores_and_bytes() {
        let now = "2026-12-06T10:09:30Z".parse().unwrap();
        let usage = usage_of(&response(), now).unwrap();
        assert_eq!(
            usage.containers,
            vec![ContainerUsage {
                name: "app".into(),
                cpu_cores: 0.25,
                cpu_core_seconds: 0.0,
                memory_bytes: 52_428_800,
            }],
            "the sidecar has no memory point, so no sample"
        );
        assert_eq!(
            usage.sampled_at,
            "2026-12-06T10:09:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(usage.window, GRAIN);
    }

    #[test]
    fn the_current_minute_is_sampled_at_the_read_not_in_the_future() {
        let now = "2026-12-06T10:08:20Z".parse().unwrap();
        assert_eq!(usage_of(&response(), now).unwrap().sampled_at, now);
    }

    #[test]
    fn a_group_azure_monitor_has_no_points_for_yet_has_no_usage() {
        let empty: MetricsResponse = serde_json::from_value(json!({"value": [
            {"name": {"value": "CpuUsage"}, "timeseries": []}, {"name": {"value": "MemoryUsage"}, "timeseries": []}
        ]}))
        .unwrap();
        assert_eq!(usage_of(&empty, Utc::now()), None);
    }
}
