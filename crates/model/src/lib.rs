//! Resource model of serval: Knative-shaped `Service`, `Revision`, `Broker`, `Trigger`,
//! `PingSource`, `Channel`, `Subscription`, `Sequence`, `Parallel`, the event sources
//! (`FileSource`, `NatsSource`, `PostgresSource`, `WebhookSource`, `KafkaSource`,
//! `ApiServerSource`), `SinkBinding`, `ContainerSource`, label selectors and Kubernetes
//! `Secret`/`ConfigMap` objects, key-value stores and workflows, a Service's async invocation
//! settings, their validation (with field
//! paths), naming rules, the derived values every other crate agrees on (revision names,
//! routing hosts, runtime choice), and the [`Resource`] trait by which a kind describes
//! itself ([`KindInfo`]: kind, apiVersion, plural, table columns) to the API and the CLI.
//!
//! Owns: the wire shapes (`serving.knative.dev/v1`) and pure functions on them.
//! Must not depend on: any IO, tokio, or another serval crate.

pub mod autoscaling;
mod bindings;
mod calls;
mod config_data;
mod eventing;
mod expand;
mod kv;
mod lambda;
mod messaging;
mod meta;
mod resource;
mod service;
mod sources;
mod validate;
mod workflow;

pub use autoscaling::{AutoscalingAnnotations, ScalingMetric, parse_autoscaling};
pub use bindings::{
    BindingSubject, ContainerSource, ContainerSourceSpec, SinkBinding, SinkBindingSpec, container_source_binding,
    container_source_service,
};
pub use calls::{
    ASYNC_MAX_AGE, ASYNC_ON_FAILURE, ASYNC_ON_SUCCESS, ASYNC_RETRIES, AsyncSettings, DEFAULT_ASYNC_MAX_AGE,
    DEFAULT_ASYNC_RETRIES, async_settings, parse_destination,
};
pub use config_data::{
    CORE_API_VERSION, ConfigKind, ConfigMap, EnvFromSource, EnvVarSource, KeySelector, MAX_CONFIG_DATA_BYTES,
    NameSelector, Secret, validate_config_map, validate_secret,
};
pub use eventing::{
    Addressable, Broker, BrokerSpec, DEFAULT_DELIVERY_CONCURRENCY, DELIVERY_CONCURRENCY, Destination,
    EVENTING_API_VERSION, EventingStatus, KReference, MAX_DELIVERY_CONCURRENCY, PingSource, PingSourceSpec,
    SOURCES_API_VERSION, Trigger, TriggerSpec, delivery_concurrency, validate_broker, validate_ping_source,
    validate_trigger,
};
pub use expand::{expand_environment, expand_references};
pub use kv::{
    DEFAULT_KV_STORE, KV_STORES_ANNOTATION, KeyValueStore, KeyValueStoreStatus, SERVAL_API_VERSION, kv_stores_of,
    validate_key_value_store,
};
pub use lambda::{
    LAMBDA_CODE, LAMBDA_FUNCTION, LAMBDA_HANDLER, LAMBDA_RUNTIME, LambdaFunction, PROTOCOL, check_lambda,
};
pub use messaging::{
    Addressee, Channel, ChannelSpec, ChannelStatus, ChannelTemplate, FLOWS_API_VERSION, FlowStatus, InMemoryChannel,
    MAX_FLOW_NAME, MAX_FLOW_PARTS, MESSAGING_API_VERSION, Parallel, ParallelBranch, ParallelSpec, PhysicalSubscription,
    Sequence, SequenceSpec, SequenceStep, SubscriberSpec, SubscriberStatus, Subscription, SubscriptionSpec,
    SubscriptionStatus, check_destination_shape, classify, classify_uri, destination_warnings, parallel_branch_channel,
    parallel_branch_subscription, parallel_filter_subscription, parallel_ingress, sequence_channel,
    sequence_subscription, validate_channel, validate_parallel, validate_sequence, validate_subscription,
};
pub use meta::{
    Condition, ConditionStatus, LabelSelector, LabelSelectorRequirement, ObjectMeta, OwnerReference, TemplateMeta,
};
pub use resource::{Column, KindInfo, Resource, api_group, builtin_kinds, configuration_info, route_info};
pub use service::{
    Container, ContainerPort, EnvVar, H2C_PORT_NAME, HttpGetAction, HttpHeader, InstanceCounts, Probe,
    ResourceRequirements, Revision, RevisionSpec, RevisionStatus, RevisionTemplate, RuntimeKind, SERVING_API_VERSION,
    SecurityContext, Service, ServiceSpec, ServiceStatus, TcpSocketAction, TrafficTarget, annotations, parse_cpu,
    parse_memory, revision_name,
};
pub use sources::{
    API_SERVER_MODES, ApiServerResource, ApiServerSource, ApiServerSourceSpec, CeOverrides, DELIVERY_BATCH_SIZE,
    DELIVERY_ORDER, FileSource, FileSourceSpec, INSTANCE_EVENTS_KIND, KAFKA_SOURCE_API_VERSION, KNATIVE_DELIVERY_ORDER,
    KafkaSource, KafkaSourceSpec, MAX_DELIVERY_BATCH_SIZE, MAX_SOURCE_LIST, NatsSource, NatsSourceSpec, PostgresSource,
    PostgresSourceSpec, SERVAL_SOURCES_API_VERSION, Source, SourceSpec, SourceStatus, WebhookSecret, WebhookSource,
    WebhookSourceSpec, delivers_unordered, delivery_batch_size, validate_source, watchable_kinds,
};
pub use validate::{
    FieldError, MAX_SERVICE_NAME, ScaleLimits, ValidationError, check_scale_limits, parse_duration, validate_name,
    validate_service,
};
pub use workflow::{
    WORKFLOW_BROKER_ANNOTATION, Workflow, WorkflowStatus, validate_workflow, workflow_from_document, workflow_trigger,
};

/// Errors of the model crate: a resource that fails validation or cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{0}")]
    Invalid(#[from] ValidationError),
    #[error("cannot decode {kind}: {message}")]
    Decode { kind: &'static str, message: String },
}
