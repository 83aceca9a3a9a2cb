//! Workflows in the control plane: a Workflow's DSL document is checked by the engine when
//! it is written (a 422 naming the field and the task's place); runs are started, listed,
//! read with their journal and cancelled here, and resumed after a restart.
//!
//! A workflow that listens (a `listen` task, or `schedule.on`) owns a Trigger
//! (`<name>-workflow`) on its broker whose subscriber is the workflow (a `ref` to it resolves
//! to its address on the gateway, `/w/<ns>/<name>`, [`crate::workflows::WorkflowIngress`]);
//! events sent there go to its runs' inboxes and its schedule. `schedule.every|cron|after` run on timers.

use futures_util::future::BoxFuture;
use serde_json::Value;
use serval_model::{
    Condition, ConditionStatus, Destination, KReference, ObjectMeta, OwnerReference, Resource, Trigger, TriggerSpec,
    WORKFLOW_BROKER_ANNOTATION, Workflow, workflow_trigger,
};
use serval_store::{ResourceStoreExt, WriteOp};
use serval_workflow::engine::TaskRecord;

use super::Controller;
use crate::ControlError;
use crate::kinds::{ApplyMode, Change, Reconciler, carry_identity, now_rfc3339};
use crate::workflows::{RUN_KIND, RUNNING, Run, Starter, WorkflowRuns};

/// The DSL document of a stored Workflow, checked (a 422 naming `spec…` otherwise).
fn definition(workflow: &Workflow) -> Result<serval_workflow::Workflow, ControlError> {
    serval_workflow::Workflow::from_value(workflow.spec.clone()).map_err(|e| {
        let field = format!("spec{}", e.instance.clone().unwrap_or_default().replace('/', "."));
        ControlError::invalid_field(Workflow::KIND, field, e.detail.clone().unwrap_or_else(|| e.to_string()))
    })
}

fn starter(workflow: &Workflow) -> Result<Starter, ControlError> {
    Ok(Starter {
        definition: std::sync::Arc::new(definition(workflow)?),
        namespace: workflow.metadata.namespace.clone(),
        name: workflow.metadata.name.clone(),
        broker: workflow
            .metadata
            .annotations
            .get(WORKFLOW_BROKER_ANNOTATION)
            .cloned()
            .unwrap_or_else(|| "default".into()),
    })
}

/// Whether a document waits for events: a `listen` task anywhere, or `schedule.on`.
fn listens(document: &Value) -> bool {
    fn has_listen(value: &Value) -> bool {
        match value {
            Value::Object(map) => {
                map.get("listen").is_some_and(|l| l.get("to").is_some()) || map.values().any(has_listen)
            }
            Value::Array(items) => items.iter().any(has_listen),
            _ => false,
        }
    }
    document["schedule"].get("on").is_some() || has_listen(&document["do"])
}

fn owner(workflow: &Workflow) -> OwnerReference {
    OwnerReference {
        api_version: Workflow::API_VERSION.into(),
        kind: Workflow::KIND.into(),
        name: workflow.metadata.name.clone(),
        uid: workflow.metadata.uid.clone(),
        controller: Some(true),
    }
}

impl Controller {
    fn stored_workflow(&self, namespace: &str, name: &str) -> Result<Workflow, ControlError> {
        self.store.get(Workflow::KIND, namespace, name)?.ok_or_else(|| ControlError::NotFound {
            kind: "Workflow",
            namespace: namespace.into(),
            name: name.into(),
        })
    }

    /// Starts a run of a workflow on `input`.
    pub async fn run_workflow(&self, namespace: &str, name: &str, input: Value) -> Result<Run, ControlError> {
        let workflow = self.stored_workflow(namespace, name)?;
        self.workflows.start(&starter(&workflow)?, input).await
    }

    /// Delivers CloudEvents (JSON) to a workflow's runs in progress and its `schedule.on`;
    /// durable when this returns.
    pub async fn deliver_to_workflow(&self, namespace: &str, name: &str, events: &[Value]) -> Result<(), ControlError> {
        let workflow = self.stored_workflow(namespace, name)?;
        self.workflows.deliver(&starter(&workflow)?, events).await
    }

    /// The runs of a workflow, newest first.
    pub fn workflow_runs(&self, namespace: &str, name: &str) -> Result<Vec<Run>, ControlError> {
        self.stored_workflow(namespace, name)?;
        let mut runs: Vec<Run> = self.store.list_owned(RUN_KIND, namespace, name)?;
        runs.sort_by(|a, b| b.id.cmp(&a.id));
        Ok(runs)
    }

    /// A run and its journal.
    pub fn workflow_run(&self, namespace: &str, id: &str) -> Result<(Run, Vec<TaskRecord>), ControlError> {
        let run: Run = self.store.get(RUN_KIND, namespace, id)?.ok_or_else(|| ControlError::NotFound {
            kind: "WorkflowRun",
            namespace: namespace.into(),
            name: id.into(),
        })?;
        let journal = self.workflows.journal(namespace, id)?;
        Ok((run, journal))
    }

    /// Cancels a run in progress (a 409 for a run that ended).
    pub async fn cancel_workflow_run(&self, namespace: &str, id: &str) -> Result<Run, ControlError> {
        let (run, _) = self.workflow_run(namespace, id)?;
        if run.state != RUNNING {
            return Err(ControlError::Conflict(format!("run {id} is {} already", run.state)));
        }
        self.workflows.cancel(run).await
    }

    /// Resumes the runs a previous server left in progress, starts the schedules' timers,
    /// and starts the runs that events kept for `schedule.on` call for.
    pub(super) fn resume_workflow_runs(&self) {
        let runs: Vec<Run> = self.store.list(RUN_KIND, None).unwrap_or_default();
        for run in runs.into_iter().filter(|r| r.state == RUNNING) {
            match self.stored_workflow(&run.namespace, &run.workflow).and_then(|w| starter(&w)) {
                Ok(starter) => self.workflows.resume(run, starter),
                Err(e) => tracing::error!("workflow run {}/{} cannot resume: {e}", run.namespace, run.id),
            }
        }
        let workflows: Vec<Workflow> = self.store.list(Workflow::KIND, None).unwrap_or_default();
        for workflow in workflows {
            let Ok(starter) = starter(&workflow) else { continue };
            self.start_schedule(starter);
        }
    }

    fn start_schedule(&self, starter: Starter) {
        if let Err(e) = self.workflows.schedule(starter.clone()) {
            tracing::error!("workflow {}/{}: its schedule: {e}", starter.namespace, starter.name);
        }
        let runs = self.workflows.clone();
        tokio::spawn(async move {
            if let Err(e) = runs.start_on_events(&starter).await {
                tracing::error!("workflow {}/{}: schedule.on: {e}", starter.namespace, starter.name);
            }
        });
    }

    /// The writes that give a workflow the trigger it listens through (or remove it when it
    /// no longer listens); a trigger of that name it does not own is a conflict.
    fn workflow_trigger_ops(&self, workflow: &Workflow, wanted: bool) -> Result<Vec<WriteOp>, ControlError> {
        let (namespace, name) = (&workflow.metadata.namespace, workflow_trigger(&workflow.metadata.name));
        let previous: Option<Trigger> = self.store.get(Trigger::KIND, namespace, &name)?;
        if let Some(p) = &previous
            && !p.metadata.is_owned_by(Workflow::KIND, &workflow.metadata.name)
        {
            return Err(ControlError::Conflict(format!(
                "trigger {namespace}/{name} exists and is not the one of workflow {}; delete or rename it",
                workflow.metadata.name
            )));
        }
        let mut ops = Vec::new();
        if !wanted {
            if let Some(p) = previous {
                ops.push(WriteOp::delete(Trigger::KIND, namespace, &name));
                ops.extend(<Controller as Reconciler<Trigger>>::removed(self, &p));
            }
            return Ok(ops);
        }
        let broker = starter(workflow)?.broker;
        let me = KReference {
            api_version: Workflow::API_VERSION.into(),
            kind: Workflow::KIND.into(),
            name: workflow.metadata.name.clone(),
            namespace: None,
        };
        let mut trigger = Trigger {
            api_version: Trigger::API_VERSION.into(),
            kind: Trigger::KIND.into(),
            metadata: ObjectMeta {
                name: name.clone(),
                namespace: namespace.clone(),
                owner_references: vec![owner(workflow)],
                ..ObjectMeta::default()
            },
            spec: TriggerSpec {
                broker,
                subscriber: Destination { reference: Some(me), ..Destination::default() },
                ..TriggerSpec::default()
            },
            status: Default::default(),
        };
        let changed = previous.as_ref().is_none_or(|p| p.spec != trigger.spec);
        let old = previous.as_ref().map(|p| (&p.metadata, changed));
        carry_identity(Trigger::KIND, ApplyMode::CreateOrUpdate, &mut trigger.metadata, old, &now_rfc3339())?;
        ops.extend(<Controller as Reconciler<Trigger>>::admit(self, &mut trigger, previous.as_ref())?);
        ops.push(WriteOp::put(Trigger::KIND, namespace, &name, &trigger)?);
        Ok(ops)
    }

    fn workflow_address(&self, namespace: &str, name: &str) -> String {
        format!("http://{}{}{namespace}/{name}", self.addrs.gateway, crate::workflows::INGRESS_PREFIX)
    }
}

/// A Workflow: its document checked by the engine; the trigger it listens through written
/// with it; its runs, journals, inboxes and schedule go with it.
impl Reconciler<Workflow> for Controller {
    fn admit(&self, workflow: &mut Workflow, _previous: Option<&Workflow>) -> Result<Vec<WriteOp>, ControlError> {
        definition(workflow)?;
        if let Some(cron) = workflow.spec["schedule"]["cron"].as_str() {
            serval_eventing::ping::PingSchedule::new(cron, None)
                .map_err(|e| ControlError::invalid_field(Workflow::KIND, "spec.schedule.cron", e.to_string()))?;
        }
        let (namespace, name) = (workflow.metadata.namespace.clone(), workflow.metadata.name.clone());
        let ops = self.workflow_trigger_ops(workflow, listens(&workflow.spec))?;
        workflow.status.address = Some(serval_model::Addressable { url: self.workflow_address(&namespace, &name) });
        let ready = Condition::new("Ready", ConditionStatus::True, "", "");
        Condition::set(&mut workflow.status.conditions, ready, &now_rfc3339());
        Ok(ops)
    }

    fn removed(&self, workflow: &Workflow) -> Vec<WriteOp> {
        let (namespace, name) = (&workflow.metadata.namespace, &workflow.metadata.name);
        let runs: Vec<Run> = self.store.list_owned(RUN_KIND, namespace, name).unwrap_or_default();
        let mut ops: Vec<WriteOp> = runs.iter().flat_map(|r| WorkflowRuns::forget(namespace, &r.id)).collect();
        ops.extend(WorkflowRuns::forget_schedule(namespace, name));
        ops.extend(self.workflow_trigger_ops(workflow, false).unwrap_or_default());
        ops
    }

    fn changed<'a>(&'a self, change: Change<'a, Workflow>) -> BoxFuture<'a, Result<(), ControlError>> {
        Box::pin(async move {
            self.refresh_referrers(Some(&change.object().metadata.namespace)).await?;
            self.sync_dispatchers();
            match change {
                Change::Deleted(w) => self.workflows.unschedule(&w.metadata.namespace, &w.metadata.name),
                Change::Created(w) | Change::Updated(w) => self.start_schedule(starter(w)?),
            }
            Ok(())
        })
    }
}
