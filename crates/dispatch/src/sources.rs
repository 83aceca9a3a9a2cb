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
use crate::delivery::{DeliveryUrl, Dispatchers, Ttl};
use crate::supervisor::{Supervisor, Wanted};

/// A source made ready to run.
#[derive(Clone)]
pub struct PingPlan {
    pub namespace: String,
    pub name: String,
    pub schedule: PingSchedule,
    pub data: Option<Data>,
    pub content_type: Option<String>,
    /// Where pings go, as resolved (shown in the source's status).
    pub sink: String,
    sink_url: DeliveryUrl,
    /// The sink's broker (namespace, name) when it is one of serval's: pings are appended
    /// to its log directly instead of posted through the gateway.
    pub broker: Option<(String, String)>,
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
    let sink = crate::delivery::resolve(&spec.sink, &source.metadata.namespace, gateway)
        .ok_or_else(|| invalid("spec.sink", "give ref or uri".into()))?;
    let sink_url = DeliveryUrl::parse(&sink, gateway).map_err(|e| invalid("spec.sink", format!("{sink:?}: {e}")))?;
    Ok(PingPlan {
        namespace: source.metadata.namespace.clone(),
        name: source.metadata.name.clone(),
        schedule,
        data,
        content_type: spec.content_type.clone(),
        sink,
        sink_url,
        broker: crate::delivery::broker_of(&spec.sink, &source.metadata.namespace)
            .map(|(namespace, name)| (namespace.to_string(), name.to_string())),
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
            .map(|(plan, fingerprint)| Wanted {
                key: crate::delivery::key(&plan.namespace, &plan.name),
                fingerprint,
                plan,
            })
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
        if let Some((namespace, broker)) = &plan.broker {
            if let Err(e) = dispatchers.append(namespace, broker, vec![event], Ttl::KeepOrDefault).await {
                tracing::warn!("pingsource {}/{}: broker {namespace}/{broker}: {e}", plan.namespace, plan.name);
            }
            continue;
        }
        match dispatchers.post(&plan.sink_url, &event, false, Some(PING_TIMEOUT)).await.0 {
            Outcome::Status(code, _) if (200..300).contains(&code) => {}
            Outcome::Status(code, _) => {
                tracing::warn!("pingsource {}/{}: sink answered {code}", plan.namespace, plan.name)
            }
            Outcome::NoResponse => tracing::warn!("pingsource {}/{}: sink did not answer", plan.namespace, plan.name),
        }
    }
}
