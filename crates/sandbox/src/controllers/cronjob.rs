//! The CronJob controller, in real time: at each slot of `schedule` (5
//! fields or a nickname such as `@hourly`, in `timeZone` or UTC, parsed by
//! croner) after `status.lastScheduleTime` (or the creation time), it
//! creates Job `<cronjob>-<slot in minutes since the epoch>` from
//! `jobTemplate` with the `batch.kubernetes.io/cronjob-scheduled-timestamp`
//! annotation, unless `suspend` is set or the slot is older than
//! `startingDeadlineSeconds`. `concurrencyPolicy`: `Allow` runs Jobs side
//! by side, `Forbid` skips a slot while one is active, `Replace` deletes
//! the active ones first. Status: `active` references, `lastScheduleTime`,
//! `lastSuccessfulTime`. Finished Jobs beyond `successfulJobsHistoryLimit`
//! (default 3) and `failedJobsHistoryLimit` (default 1) are deleted, oldest
//! first. Only the most recent missed slot is run, as the real controller
//! does.

use std::time::Duration;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde_json::{Map, Value, json};

use super::gc::Propagation;
use super::job::finished;
use super::{
    controlled_by, create, delete, deleting, get, int, objects_in, owner_ref, update_status,
};
use crate::events::{self, EventType};
use crate::handlers::State;
use crate::meta::meta_str;

const SOURCE: &str = "cronjob-controller";

/// The CronJob controller.
pub const CRONJOBS: super::Workload = super::Workload {
    primary: ("batch", "cronjobs"),
    child: ("batch", "jobs"),
    kind: "CronJob",
    also: super::ignore_event,
    sync: reconcile,
    missing: super::nothing,
};

/// Parses a CronJob schedule as the API accepts it (5 fields or a
/// nickname).
pub fn parse(schedule: &str) -> Result<Cron, String> {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(schedule.trim())
        .map_err(|e| e.to_string())
}

fn ts(v: &Value) -> Option<jiff::Timestamp> {
    v.as_str().and_then(|t| t.parse().ok())
}

fn rfc3339(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn reconcile(st: &mut State, cj: &Value) -> Option<Duration> {
    let ns = meta_str(cj, "namespace").to_string();
    let name = meta_str(cj, "name").to_string();
    let uid = meta_str(cj, "uid").to_string();
    let now = jiff::Timestamp::now();
    let mut status = cj["status"].clone();
    if !status.is_object() {
        status = json!({});
    }
    // Our Jobs: active ones stay in status.active, finished ones update
    // lastSuccessfulTime and are subject to the history limits.
    let jobs: Vec<Value> = objects_in(st, "batch", "jobs", &ns)
        .iter()
        .map(|o| o.value())
        .filter(|j| controlled_by(j, &uid))
        .collect();
    let mut active = Vec::new();
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    for j in &jobs {
        match finished(j) {
            None if !deleting(j) => active.push(j.clone()),
            None => {}
            Some(outcome) => {
                if outcome == "Complete"
                    && let Some(t) = ts(&j["status"]["completionTime"])
                    && ts(&status["lastSuccessfulTime"]).is_none_or(|l| l < t)
                {
                    status["lastSuccessfulTime"] = json!(rfc3339(t));
                }
                if !deleting(j) {
                    if outcome == "Complete" {
                        ok.push(j)
                    } else {
                        failed.push(j)
                    }
                }
            }
        }
    }
    for (list, limit) in [
        (&mut ok, int(&cj["spec"]["successfulJobsHistoryLimit"], 3)),
        (&mut failed, int(&cj["spec"]["failedJobsHistoryLimit"], 1)),
    ] {
        list.sort_by_key(|j| {
            ts(&j["status"]["startTime"])
                .map_or(meta_str(j, "creationTimestamp").to_string(), rfc3339)
        });
        let excess = list.len().saturating_sub(limit.max(0) as usize);
        for j in list.iter().take(excess) {
            let _ = delete(
                st,
                "batch",
                "jobs",
                &ns,
                meta_str(j, "name"),
                Propagation::Background,
            );
        }
    }
    let mut next = None;
    if !deleting(cj) {
        match parse(cj["spec"]["schedule"].as_str().unwrap_or_default()) {
            Err(e) => {
                events::record(
                    st,
                    cj,
                    EventType::Warning,
                    "UnparseableSchedule",
                    &format!("unparseable schedule: {:?} : {e}", cj["spec"]["schedule"]),
                    SOURCE,
                );
            }
            Ok(cron) => {
                let tz = cj["spec"]["timeZone"].as_str().unwrap_or("UTC");
                match jiff::tz::TimeZone::get(tz) {
                    Err(_) => events::record(
                        st,
                        cj,
                        EventType::Warning,
                        "UnknownTimeZone",
                        &format!("invalid timeZone: {tz:?}"),
                        SOURCE,
                    ),
                    Ok(zone) => {
                        let zoned = now.to_zoned(zone.clone());
                        next = cron
                            .find_next_occurrence(&zoned, false)
                            .ok()
                            .map(|z| z.timestamp());
                        if cj["spec"]["suspend"] != true {
                            run_due(st, cj, &cron, &zone, now, &mut active, &mut status);
                        }
                    }
                }
            }
        }
    }
    let refs: Vec<Value> = active
        .iter()
        .map(|j| {
            json!({"kind": "Job", "apiVersion": "batch/v1", "namespace": ns,
            "name": meta_str(j, "name"), "uid": meta_str(j, "uid"),
            "resourceVersion": meta_str(j, "resourceVersion")})
        })
        .collect();
    if refs.is_empty() {
        status.as_object_mut().map(|o| o.remove("active"));
    } else {
        status["active"] = json!(refs);
    }
    if let Some(cur) = get(st, "batch", "cronjobs", &ns, &name) {
        let _ = update_status(st, "batch", "cronjobs", &cur, status);
    }
    next.map(|t| {
        Duration::from_millis((t.as_millisecond() - now.as_millisecond()).max(0) as u64 + 100)
    })
}

fn run_due(
    st: &mut State,
    cj: &Value,
    cron: &Cron,
    zone: &jiff::tz::TimeZone,
    now: jiff::Timestamp,
    active: &mut Vec<Value>,
    status: &mut Value,
) {
    let ns = meta_str(cj, "namespace").to_string();
    let name = meta_str(cj, "name").to_string();
    let deadline = cj["spec"]["startingDeadlineSeconds"].as_i64();
    let mut earliest = ts(&status["lastScheduleTime"])
        .or_else(|| ts(&cj["metadata"]["creationTimestamp"]))
        .unwrap_or(now);
    if let Some(d) = deadline {
        earliest = earliest.max(jiff::Timestamp::from_second(now.as_second() - d).unwrap_or(now));
    }
    // The most recent slot in (earliest, now].
    let Ok(slot) = cron.find_previous_occurrence(&now.to_zoned(zone.clone()), true) else {
        return;
    };
    let slot = slot.timestamp();
    if slot <= earliest {
        return;
    }
    let job_name = format!("{name}-{}", slot.as_second() / 60);
    if get(st, "batch", "jobs", &ns, &job_name).is_some() {
        return;
    }
    let policy = cj["spec"]["concurrencyPolicy"].as_str().unwrap_or("Allow");
    if policy == "Forbid" && !active.is_empty() {
        events::record(
            st,
            cj,
            EventType::Normal,
            "JobAlreadyActive",
            "Not starting job because prior execution is running and concurrency policy is Forbid",
            SOURCE,
        );
        return;
    }
    if policy == "Replace" {
        for j in active.drain(..) {
            let _ = delete(
                st,
                "batch",
                "jobs",
                &ns,
                meta_str(&j, "name"),
                Propagation::Background,
            );
            events::record(
                st,
                cj,
                EventType::Normal,
                "SuccessfulDelete",
                &format!("Deleted job {}", meta_str(&j, "name")),
                SOURCE,
            );
        }
    }
    let template = &cj["spec"]["jobTemplate"];
    let mut annotations: Map<String, Value> = template["metadata"]["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    annotations.insert(
        "batch.kubernetes.io/cronjob-scheduled-timestamp".into(),
        json!(
            slot.to_zoned(zone.clone())
                .strftime("%Y-%m-%dT%H:%M:%S%:z")
                .to_string()
        ),
    );
    let mut meta = json!({"name": job_name, "annotations": annotations,
        "ownerReferences": [owner_ref(cj)]});
    if let Some(l) = template["metadata"].get("labels") {
        meta["labels"] = l.clone();
    }
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": template["spec"]});
    match create(st, "batch", "jobs", &ns, job) {
        Ok(j) => {
            events::record(
                st,
                cj,
                EventType::Normal,
                "SuccessfulCreate",
                &format!("Created job {job_name}"),
                SOURCE,
            );
            active.push(j);
            status["lastScheduleTime"] = json!(rfc3339(slot));
        }
        Err(e) => events::record(
            st,
            cj,
            EventType::Warning,
            "FailedCreate",
            &format!("Error creating job: {}", e.message),
            SOURCE,
        ),
    }
}
