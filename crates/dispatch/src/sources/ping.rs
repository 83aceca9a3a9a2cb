//! PingSource: a task that sleeps until the schedule's next tick and sends the ping to its
//! sink once (appended to the log when the sink is a serval broker, channel or flow,
//! POSTed otherwise; Knative's PingSource does not retry). Ticks missed while the server
//! was down are not replayed.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use futures_util::future::BoxFuture;
use serval_eventing::Data;
use serval_eventing::ping::{PingSchedule, ping_event};
use serval_model::PingSource;
use tokio::sync::watch;

use super::{SourceContext, SourceTask};
use crate::DispatchError;
use crate::delivery::Resolved;

/// A PingSource made ready to run.
pub struct PingTask {
    pub schedule: PingSchedule,
    pub data: Option<Data>,
    pub content_type: Option<String>,
}

/// Validates the schedule, time zone and data, and resolves the sink (`Err` in the second
/// place: why the sink cannot be delivered to; the source is stored, not run).
pub fn ping_plan(source: &PingSource, gateway: &str) -> Result<(PingTask, Result<Resolved, String>), DispatchError> {
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
    Ok((PingTask { schedule, data, content_type: spec.content_type.clone() }, sink))
}

/// How long a sink may take to answer a ping.
const PING_TIMEOUT: Duration = Duration::from_secs(10);

impl SourceTask for PingTask {
    fn run(self: Arc<Self>, context: SourceContext, mut stopped: watch::Receiver<bool>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let (namespace, name) = (&context.namespace, &context.name);
            loop {
                let now = SystemTime::now();
                let Some(next) = self.schedule.next_after(now) else { return };
                let wait = next.duration_since(now).unwrap_or(Duration::ZERO);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = stopped.wait_for(|s| *s) => return,
                }
                let event = match ping_event(namespace, name, next, self.data.clone(), self.content_type.as_deref()) {
                    Ok(e) => e,
                    Err(e) => return tracing::error!("pingsource {namespace}/{name}: {e}"),
                };
                if let Err(why) = context.sink.send_once(event, PING_TIMEOUT).await {
                    tracing::warn!("pingsource {namespace}/{name}: {why}");
                }
            }
        })
    }
}
