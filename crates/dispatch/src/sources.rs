//! Event sources: one task per `PingSource` that sleeps until the schedule's next tick and
//! sends the ping to its sink (appended to the log when the sink is a serval broker, POSTed
//! otherwise). Ticks missed while the server was down are not replayed.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use serval_eventing::ping::{PingSchedule, ping_event};
use serval_eventing::{Data, Outcome};
use serval_model::PingSource;
use tokio::sync::watch;

use crate::DispatchError;
use crate::delivery::{Dispatchers, Resolved, Ttl};
use crate::plan::Target;
use crate::supervisor::{Supervisor, Wanted};

/// A source made ready to run.
#[derive(Clone)]
pub struct PingPlan {
    pub namespace: String,
    pub name: String,
    pub schedule: PingSchedule,
    pub data: Option<Data>,
    pub content_type: Option<String>,
    /// Where pings go, as resolved (its URL is shown in the source's status): a broker,
    /// channel or flow of serval's takes them into its log directly, others by POST;
    /// `Err` says why the sink cannot be delivered to (the source is stored, not run).
    pub sink: Result<Resolved, String>,
}

/// Validates the schedule, time zone and data, and resolves the sink.
pub fn ping_plan(source: &PingSource, gateway: &str) -> Result<PingPlan, DispatchError> {
    let invalid = |field: &str, message: String| DispatchError::invalid_field("PingSource", field, message);
    let spec = &source.spec;
    let schedule = PingSchedule::new(&spec.schedule, spec.timezone.as_deref())
        .map_err(|e| invalid("spec.schedule", e.to_string()))?;
    let data = match (&spec.data, &spec.data_base64) {
        (Some(text), _) => Some(Data::from(text.as_str())),
        (None, Some(b64)) => Some(Data::from(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| invalid("spec.dataBase64", format!("not base64: {e}")))?,
        )),
        (None, None) => None,
    };
    let sink = crate::delivery::resolve(&spec.sink, &source.metadata.namespace, gateway);
    Ok(PingPlan {
        namespace: source.metadata.namespace.clone(),
        name: source.metadata.name.clone(),
        schedule,
        data,
        content_type: spec.content_type.clone(),
        sink,
    })
}

/// The running ping sources.
pub struct Sources {
    running: Supervisor,
    dispatchers: Arc<Dispatchers>,
}

impl Sources {
    pub fn new(dispatchers: Arc<Dispatchers>) -> Sources {
        Sources { running: Supervisor::default(), dispatchers }
    }

    /// Makes the running sources match `plans` (`(plan, fingerprint)`).
    pub fn sync(&self, plans: Vec<(PingPlan, String)>) {
        let wanted = plans
            .into_iter()
            .map(|(plan, fingerprint)| Wanted { key: format!("{}/{}", plan.namespace, plan.name), fingerprint, plan })
            .collect();
        self.running.sync(wanted, |_, plan, stopped| {
            tokio::spawn(run(plan, self.dispatchers.clone(), stopped));
        });
    }

    pub fn stop_all(&self) {
        self.running.stop_all();
    }
}

/// How long a sink may take to answer a ping (Knative's PingSource does not retry).
const PING_TIMEOUT: Duration = Duration::from_secs(10);

async fn run(plan: PingPlan, dispatchers: Arc<Dispatchers>, mut stopped: watch::Receiver<bool>) {
    loop {
        let now = SystemTime::now();
        let Some(next) = plan.schedule.next_after(now) else { return };
        let wait = next.duration_since(now).unwrap_or(Duration::ZERO);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        let event = match ping_event(&plan.namespace, &plan.name, next, plan.data.clone(), plan.content_type.as_deref())
        {
            Ok(e) => e,
            Err(e) => return tracing::error!("pingsource {}/{}: {e}", plan.namespace, plan.name),
        };
        let Ok(sink) = &plan.sink else { return };
        let url = match &sink.target {
            Target::Log(log) => {
                if let Err(e) = dispatchers.append_to(log, vec![event], Ttl::KeepOrDefault).await {
                    tracing::warn!("pingsource {}/{}: {}: {e}", plan.namespace, plan.name, log.describe());
                }
                continue;
            }
            Target::Http(url) => url,
        };
        match dispatchers.post(url, &event, false, Some(PING_TIMEOUT), false).await.0 {
            Outcome::Status(code, _) if (200..300).contains(&code) => {}
            Outcome::Status(code, _) => {
                tracing::warn!("pingsource {}/{}: sink answered {code}", plan.namespace, plan.name)
            }
            Outcome::NoResponse => tracing::warn!("pingsource {}/{}: sink did not answer", plan.namespace, plan.name),
        }
    }
}
