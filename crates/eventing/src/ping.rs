//! `PingSource` schedules and events, sans-IO: the next tick is a pure function of the
//! schedule, the time zone and `now`.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Timelike, Utc};
use chrono_tz::Tz;
use croner::Cron;

use crate::{CloudEvent, Data, EventError};

/// The CloudEvents type of a ping (Knative's).
pub const PING_EVENT_TYPE: &str = "dev.knative.sources.ping";

/// A parsed `schedule` (5 fields, or 6 with seconds first) in a time zone.
#[derive(Debug, Clone)]
pub struct PingSchedule {
    cron: Cron,
    zone: Tz,
}

fn invalid(field: &str, reason: String) -> EventError {
    EventError::InvalidDelivery { field: field.into(), reason }
}

impl PingSchedule {
    pub fn new(schedule: &str, timezone: Option<&str>) -> Result<PingSchedule, EventError> {
        // croner's default parser: 5 fields, or 6 with seconds first.
        let cron = Cron::from_str(schedule)
            .map_err(|e| invalid("spec.schedule", format!("{schedule:?} is not a cron schedule: {e}")))?;
        let zone = match timezone {
            Some(name) => {
                Tz::from_str(name).map_err(|_| invalid("spec.timezone", format!("{name:?} is not a time zone")))?
            }
            None => Tz::UTC,
        };
        Ok(PingSchedule { cron, zone })
    }

    /// The first tick strictly after `now`. Ticks missed while nothing ran are not returned:
    /// the schedule always continues from the present.
    pub fn next_after(&self, now: SystemTime) -> Option<SystemTime> {
        let now: DateTime<Utc> = now.into();
        // Ticks fall on whole seconds; croner would carry the fraction of `now` along.
        let now = now.with_nanosecond(0)?;
        let local = now.with_timezone(&self.zone);
        let next = self.cron.find_next_occurrence(&local, false).ok()?;
        let secs = next.timestamp();
        let nanos = next.timestamp_subsec_nanos();
        Some(SystemTime::UNIX_EPOCH + Duration::new(u64::try_from(secs).ok()?, nanos))
    }
}

/// The ping a source emits at `time`: Knative's type and source, the configured data.
pub fn ping_event(
    namespace: &str,
    name: &str,
    time: SystemTime,
    data: Option<Data>,
    content_type: Option<&str>,
) -> Result<CloudEvent, EventError> {
    let stamp: DateTime<Utc> = time.into();
    let id = format!("{name}-{}", stamp.timestamp_nanos_opt().unwrap_or_default());
    let mut builder = CloudEvent::builder()
        .id(id)
        .source(format!("/apis/v1/namespaces/{namespace}/pingsources/{name}"))
        .event_type(PING_EVENT_TYPE)
        .time(stamp.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    if let Some(ct) = content_type {
        builder = builder.datacontenttype(ct);
    }
    match data {
        Some(d) => builder.data(d).build(),
        None => builder.build(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn minutes_seconds_and_time_zones() {
        let every_minute = PingSchedule::new("* * * * *", None).expect("valid");
        assert_eq!(every_minute.next_after(at(1_700_000_030)), Some(at(1_700_000_040)));
        let every_second = PingSchedule::new("* * * * * *", None).expect("valid");
        assert_eq!(every_second.next_after(at(100)), Some(at(101)));
        let mid_second = at(100) + Duration::from_millis(954);
        assert_eq!(every_second.next_after(mid_second), Some(at(101)), "ticks are whole seconds");
        // 09:00 in Berlin is 08:00 UTC in winter.
        let nine = PingSchedule::new("0 9 * * *", Some("Europe/Berlin")).expect("valid");
        let midnight_utc = at(1_700_006_400); // 2023-11-15T00:00:00Z
        assert_eq!(nine.next_after(midnight_utc), Some(at(1_700_006_400 + 8 * 3600)));
        assert!(PingSchedule::new("every day", None).is_err());
        assert!(PingSchedule::new("* * * * *", Some("Mars/Olympus")).is_err());
    }

    #[test]
    fn ping_events_follow_knative() {
        let e = ping_event("ns", "p", at(60), Some(Data::from(r#"{"hello":"ping"}"#)), Some("application/json"))
            .expect("event");
        assert_eq!(e.event_type(), PING_EVENT_TYPE);
        assert_eq!(e.source(), "/apis/v1/namespaces/ns/pingsources/p");
        assert_eq!(e.time(), Some("1970-01-01T00:01:00.000Z"));
    }
}
