//! Workflows in the control plane: a Workflow's DSL document is checked by the engine when
//! it is written (a 422 naming the field and the task's place); runs are started, listed,
//! read with their journal and cancelled here, and resumed after a restart.

use serde_json::Value;
use serval_model::{Condition, ConditionStatus, Resource, WORKFLOW_BROKER_ANNOTATION, Workflow};
use serval_store::{ResourceStoreExt, WriteOp};
use serval_workflow::engine::TaskRecord;

use super::Controller;
use crate::ControlError;
use crate::kinds::{Reconciler, now_rfc3339};
use crate::workflows::{RUN_KIND, RUNNING, Run, WorkflowRuns};

/// The DSL document of a stored Workflow, checked (a 422 naming `spec…` otherwise).
fn definition(workflow: &Workflow) -> Result<serval_workflow::Workflow, ControlError> {
    serval_workflow::Workflow::from_value(workflow.spec.clone()).map_err(|e| {
        let field = format!("spec{}", e.instance.clone().unwrap_or_default().replace('/', "."));
        ControlError::invalid_field(Workflow::KIND, field, e.detail.clone().unwrap_or_else(|| e.to_string()))
    })
}

fn broker_of(workflow: &Workflow) -> String {
    workflow.metadata.annotations.get(WORKFLOW_BROKER_ANNOTATION).cloned().unwrap_or_else(|| "default".into())
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
        let broker = broker_of(&workflow);
        self.workflows.start(definition(&workflow)?, namespace, name, broker, input).await
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

    /// Resumes the runs a previous server left in progress.
    pub(super) fn resume_workflow_runs(&self) {
        let runs: Vec<Run> = self.store.list(RUN_KIND, None).unwrap_or_default();
        for run in runs.into_iter().filter(|r| r.state == RUNNING) {
            match self.stored_workflow(&run.namespace, &run.workflow).and_then(|w| Ok((definition(&w)?, broker_of(&w))))
            {
                Ok((definition, broker)) => self.workflows.resume(run, definition, broker),
                Err(e) => tracing::error!("workflow run {}/{} cannot resume: {e}", run.namespace, run.id),
            }
        }
    }
}

/// A Workflow: its document checked by the engine; its runs and journals go with it.
impl Reconciler<Workflow> for Controller {
    fn admit(&self, workflow: &mut Workflow, _previous: Option<&Workflow>) -> Result<Vec<WriteOp>, ControlError> {
        definition(workflow)?;
        let ready = Condition::new("Ready", ConditionStatus::True, "", "");
        Condition::set(&mut workflow.status.conditions, ready, &now_rfc3339());
        Ok(Vec::new())
    }

    fn removed(&self, workflow: &Workflow) -> Vec<WriteOp> {
        let (namespace, name) = (&workflow.metadata.namespace, &workflow.metadata.name);
        let runs: Vec<Run> = self.store.list_owned(RUN_KIND, namespace, name).unwrap_or_default();
        runs.iter().flat_map(|r| WorkflowRuns::forget(namespace, &r.id)).collect()
    }
}
