//! Property tests of decoding and validating Knative manifests, which users write by hand
//! and `serval apply` / the API read as YAML or JSON.
//!
//! Checks that decoding (JSON with serde_json; YAML with serde-saphyr, straight into the
//! resource and through a JSON value as `serval apply` does) and validation never panic
//! — on generated Services, Triggers, Brokers and PingSources with values of the right
//! and wrong types, and on their JSON and YAML text mutated (characters deleted, YAML
//! and JSON syntax inserted, lines repeated) — and that a decoded resource survives
//! encoding and decoding again unchanged.
//!
//! Deterministic: a fixed seed and no failure files (see [`config`]).

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, RngSeed};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use serval_model::{
    Broker, PingSource, Service, Trigger, validate_broker, validate_ping_source, validate_service, validate_trigger,
};

fn config() -> Config {
    Config {
        cases: 256,
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(0x40DE_0001),
        ..Config::default()
    }
}

/// Any small JSON value: what a field of the wrong type holds.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[a-zA-Z0-9 :./_-]{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            prop::collection::btree_map("[a-zA-Z]{1,6}", inner, 0..3)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A field's value: usually one `right` makes, sometimes anything at all. (One wrong
/// field fails the whole document, so it must stay rare for documents to decode.)
fn field(right: impl Strategy<Value = Value> + 'static) -> impl Strategy<Value = Value> {
    prop_oneof![24 => right.boxed(), 1 => any_json().boxed()]
}

fn select(values: &[&'static str]) -> impl Strategy<Value = Value> + use<> {
    prop::sample::select(values.to_vec()).prop_map(Value::from)
}

/// Object members that may each be absent.
fn object(members: Vec<(&'static str, BoxedStrategy<Value>)>) -> impl Strategy<Value = Value> {
    let members: Vec<_> = members
        .into_iter()
        .map(|(name, value)| proptest::option::weighted(0.8, value).prop_map(move |v| (name, v)))
        .collect();
    members.prop_map(|members| {
        Value::Object(members.into_iter().filter_map(|(name, value)| Some((name.to_owned(), value?))).collect())
    })
}

fn name() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,10}".prop_map(Value::from),
        "[A-Za-z0-9_.-]{0,12}".prop_map(Value::from),
        Just(Value::from("a".repeat(64))),
    ]
}

fn quantity_or_duration() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "0",
            "1",
            "-1",
            "10",
            "1.5",
            "abc",
            "",
            "60s",
            "1m30s",
            "500ms",
            "1h",
            "0.5",
            "NaN",
            "inf",
            "1e400",
            "64Mi",
            "1Gi",
            "500m",
            "99999999999999999999h",
            "18446744073709551615s",
            "1.7976931348623157e308s",
            "process",
            "oci",
            "wasm",
            "rps",
            "concurrency",
            "kpa.autoscaling.knative.dev",
        ])
        .prop_map(str::to_owned),
        "[0-9.]{1,24}(h|m|s|ms|us|ns|Mi|Gi|k|)",
    ]
}

fn annotations() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        4 => prop::sample::select(vec![
            "autoscaling.knative.dev/min-scale",
            "autoscaling.knative.dev/max-scale",
            "autoscaling.knative.dev/initial-scale",
            "autoscaling.knative.dev/target",
            "autoscaling.knative.dev/target-utilization-percentage",
            "autoscaling.knative.dev/window",
            "autoscaling.knative.dev/panic-window-percentage",
            "autoscaling.knative.dev/panic-threshold-percentage",
            "autoscaling.knative.dev/scale-down-delay",
            "autoscaling.knative.dev/scale-to-zero-pod-retention-period",
            "autoscaling.knative.dev/metric",
            "autoscaling.knative.dev/class",
            "serving.knative.dev/progress-deadline",
            "serval.dev/runtime",
            "serval.dev/delivery-concurrency",
        ])
        .prop_map(str::to_owned),
        1 => "[a-z./-]{1,12}".prop_map(String::from),
    ];
    field(
        prop::collection::btree_map(key, quantity_or_duration().prop_map(Value::from), 0..6)
            .prop_map(|map| Value::Object(map.into_iter().collect::<Map<String, Value>>())),
    )
}

fn metadata() -> impl Strategy<Value = Value> {
    object(vec![
        ("name", field(name()).boxed()),
        ("namespace", field(name()).boxed()),
        ("annotations", annotations().boxed()),
        ("labels", annotations().boxed()),
        ("generation", field(any::<u32>().prop_map(Value::from)).boxed()),
    ])
}

fn env_var() -> impl Strategy<Value = Value> {
    object(vec![
        ("name", field(prop_oneof![select(&["PORT", "K_SERVICE", "GREETING", "1X", "A-B", ""]), name()]).boxed()),
        ("value", field("[ -~]{0,8}".prop_map(Value::from)).boxed()),
        ("valueFrom", any_json().boxed()),
    ])
}

fn probe() -> impl Strategy<Value = Value> {
    let http_get = object(vec![
        ("path", field(select(&["/", "/ready", "ready", ""])).boxed()),
        ("port", any_json().boxed()),
        ("scheme", field(select(&["HTTP", "HTTPS", "http"])).boxed()),
    ]);
    object(vec![
        ("httpGet", field(http_get).boxed()),
        ("tcpSocket", field(Just(json!({}))).boxed()),
        ("exec", any_json().boxed()),
        ("periodSeconds", field((0u32..5).prop_map(Value::from)).boxed()),
        ("successThreshold", field((0u32..3).prop_map(Value::from)).boxed()),
    ])
}

fn container() -> impl Strategy<Value = Value> {
    let strings = || prop::collection::vec("[ -~]{0,6}".prop_map(Value::from), 0..3).prop_map(Value::from);
    let port = object(vec![
        ("containerPort", field(prop_oneof![8 => 0u32..=65_535, 1 => 65_536u32..70_000].prop_map(Value::from)).boxed()),
        ("name", field(select(&["http1", "h2c", "grpc"])).boxed()),
    ]);
    let quantities = || {
        prop::collection::btree_map(
            prop::sample::select(vec!["memory", "cpu", "nvidia.com/gpu"]).prop_map(str::to_owned),
            quantity_or_duration().prop_map(Value::from),
            0..3,
        )
        .prop_map(|map| Value::Object(map.into_iter().collect()))
    };
    let resources = object(vec![("limits", field(quantities()).boxed()), ("requests", field(quantities()).boxed())]);
    object(vec![
        ("image", field(select(&["example.com/app:1", "", " "])).boxed()),
        ("command", field(strings()).boxed()),
        ("args", field(strings()).boxed()),
        ("env", field(prop::collection::vec(env_var(), 0..3).prop_map(Value::from)).boxed()),
        ("ports", field(prop::collection::vec(port, 0..3).prop_map(Value::from)).boxed()),
        ("readinessProbe", field(probe()).boxed()),
        ("resources", field(resources).boxed()),
        ("securityContext", field(Just(json!({"readOnlyRootFilesystem": true, "runAsUser": 0}))).boxed()),
        ("livenessProbe", any_json().boxed()),
    ])
}

fn service() -> impl Strategy<Value = Value> {
    let target = object(vec![
        ("revisionName", field(name()).boxed()),
        ("latestRevision", field(any::<bool>().prop_map(Value::from)).boxed()),
        ("percent", field(prop_oneof![0u32..=101, Just(u32::MAX)].prop_map(Value::from)).boxed()),
        ("tag", field(name()).boxed()),
        ("url", field(select(&["http://hello.default.localhost"])).boxed()),
    ]);
    let revision_spec = object(vec![
        ("containers", field(prop::collection::vec(container(), 0..3).prop_map(Value::from)).boxed()),
        ("containerConcurrency", field(prop_oneof![0u32..2000, Just(u32::MAX)].prop_map(Value::from)).boxed()),
        ("timeoutSeconds", field(prop_oneof![0u64..4000, Just(u64::MAX)].prop_map(Value::from)).boxed()),
    ]);
    let template = object(vec![("metadata", field(metadata()).boxed()), ("spec", field(revision_spec).boxed())]);
    let spec = object(vec![
        ("template", field(template).boxed()),
        ("traffic", field(prop::collection::vec(target, 0..3).prop_map(Value::from)).boxed()),
    ]);
    object(vec![
        ("apiVersion", field(select(&["serving.knative.dev/v1", "v1"])).boxed()),
        ("kind", field(select(&["Service", "Trigger"])).boxed()),
        ("metadata", field(metadata()).boxed()),
        ("spec", field(spec).boxed()),
        ("status", field(Just(json!({"observedGeneration": 1}))).boxed()),
    ])
}

fn destination() -> impl Strategy<Value = Value> {
    let reference = object(vec![
        ("apiVersion", field(select(&["serving.knative.dev/v1", "eventing.knative.dev/v1"])).boxed()),
        ("kind", field(select(&["Service", "Broker", "Channel"])).boxed()),
        ("name", field(name()).boxed()),
        ("namespace", field(name()).boxed()),
    ]);
    object(vec![
        ("ref", field(reference).boxed()),
        ("uri", field(select(&["http://127.0.0.1:1/", "https://x/", "ftp://x", ""])).boxed()),
    ])
}

fn eventing(kind: &'static str) -> impl Strategy<Value = Value> {
    let spec = object(vec![
        ("broker", field(name()).boxed()),
        ("filter", any_json().boxed()),
        ("filters", field(prop::collection::vec(any_json(), 0..3).prop_map(Value::from)).boxed()),
        ("subscriber", field(destination()).boxed()),
        ("sink", field(destination()).boxed()),
        ("delivery", any_json().boxed()),
        ("schedule", field(select(&["*/1 * * * *", "", "nonsense"])).boxed()),
        ("timezone", field(select(&["UTC", "Europe/Berlin", "Mars/Base"])).boxed()),
        ("data", field(select(&["{}", "x"])).boxed()),
        ("dataBase64", field(select(&["AA==", "!"])).boxed()),
        ("contentType", field(select(&["application/json"])).boxed()),
    ]);
    object(vec![
        ("apiVersion", field(select(&["eventing.knative.dev/v1", "sources.knative.dev/v1"])).boxed()),
        ("kind", field(Just(Value::from(kind))).boxed()),
        ("metadata", field(metadata()).boxed()),
        ("spec", field(spec).boxed()),
    ])
}

/// A resource decoded from `value`, validated, and checked to encode and decode back
/// unchanged.
fn check_value<T>(value: Value, validate: impl Fn(&T)) -> Result<(), TestCaseError>
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    let Ok(resource) = serde_json::from_value::<T>(value) else { return Ok(()) };
    validate(&resource);
    let encoded = serde_json::to_value(&resource).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let decoded: T = serde_json::from_value(encoded.clone())
        .map_err(|e| TestCaseError::fail(format!("{encoded} does not decode again: {e}")))?;
    prop_assert_eq!(decoded, resource);
    Ok(())
}

/// Every way a manifest's text is read: JSON into the resource; YAML into the resource
/// and, as `serval apply` does, into JSON values sent on as JSON.
fn check_text<T>(text: &str, validate: impl Fn(&T) + Copy) -> Result<(), TestCaseError>
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    if let Ok(resource) = serde_json::from_str::<T>(text) {
        validate(&resource);
    }
    if let Ok(resource) = serde_saphyr::from_str::<T>(text) {
        validate(&resource);
    }
    if let Ok(documents) = serde_saphyr::from_multiple::<Value>(text) {
        for document in documents {
            check_value(document, validate)?;
        }
    }
    Ok(())
}

fn validated_service(service: &Service) {
    let _ = validate_service(service);
}

fn validated_trigger(trigger: &Trigger) {
    let _ = validate_trigger(trigger);
}

fn validated_broker(broker: &Broker) {
    let _ = validate_broker(broker);
}

fn validated_ping_source(source: &PingSource) {
    let _ = validate_ping_source(source);
}

/// YAML and JSON syntax spliced into manifests: indentation, flow collections, anchors,
/// aliases, tags, merge keys, comments, block scalars and multi-document markers.
const FRAGMENTS: [&str; 24] = [
    ":",
    ": ",
    "- ",
    "\n",
    "\n  ",
    "\t",
    "{",
    "}",
    "[",
    "]",
    ",",
    "\"",
    "'",
    "#",
    "&a ",
    "*a",
    "!!str ",
    "!!binary ",
    "<<: *a\n",
    "~",
    "null",
    "|\n  ",
    "\n---\n",
    "? ",
];

#[derive(Debug, Clone)]
enum Mutation {
    Delete { at: usize, len: usize },
    Insert { at: usize, fragment: &'static str },
    RepeatLine { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1usize..6).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), prop::sample::select(FRAGMENTS.to_vec()))
            .prop_map(|(at, fragment)| Mutation::Insert { at, fragment }),
        any::<usize>().prop_map(|at| Mutation::RepeatLine { at }),
    ]
}

/// Applies mutations on character positions (so the text stays valid UTF-8).
fn mutate(text: &str, mutations: &[Mutation]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for mutation in mutations {
        let at = |at: usize, chars: &Vec<char>| at % (chars.len() + 1);
        match *mutation {
            Mutation::Delete { at: pos, len } => {
                let pos = at(pos, &chars);
                let end = (pos + len).min(chars.len());
                chars.drain(pos..end);
            }
            Mutation::Insert { at: pos, fragment } => {
                let pos = at(pos, &chars);
                chars.splice(pos..pos, fragment.chars());
            }
            Mutation::RepeatLine { at: pos } => {
                let pos = at(pos, &chars);
                let start = chars[..pos].iter().rposition(|&c| c == '\n').map_or(0, |i| i + 1);
                let end = chars[pos..].iter().position(|&c| c == '\n').map_or(chars.len(), |i| pos + i + 1);
                let line: Vec<char> = chars[start..end].to_vec();
                chars.splice(start..start, line);
            }
        }
    }
    chars.into_iter().collect()
}

fn yaml(value: &Value) -> Result<String, TestCaseError> {
    serde_saphyr::to_string(value).map_err(|e| TestCaseError::fail(format!("{value} does not encode as YAML: {e}")))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn generated_services(document in service()) {
        check_text::<Service>(&document.to_string(), validated_service)?;
        check_text::<Service>(&yaml(&document)?, validated_service)?;
        check_value::<Service>(document, validated_service)?;
    }

    #[test]
    fn generated_eventing_resources(trigger in eventing("Trigger"), broker in eventing("Broker"), source in eventing("PingSource")) {
        check_value::<Trigger>(trigger.clone(), validated_trigger)?;
        check_text::<Trigger>(&yaml(&trigger)?, validated_trigger)?;
        check_value::<Broker>(broker.clone(), validated_broker)?;
        check_text::<Broker>(&yaml(&broker)?, validated_broker)?;
        check_value::<PingSource>(source.clone(), validated_ping_source)?;
        check_text::<PingSource>(&yaml(&source)?, validated_ping_source)?;
    }

    /// The parsers behind annotations and resource limits, on their own.
    #[test]
    fn annotation_and_quantity_parsers(
        annotations in prop::collection::btree_map(
            prop::sample::select(vec![
                "autoscaling.knative.dev/min-scale",
                "autoscaling.knative.dev/max-scale",
                "autoscaling.knative.dev/initial-scale",
                "autoscaling.knative.dev/target",
                "autoscaling.knative.dev/window",
                "autoscaling.knative.dev/panic-window-percentage",
                "autoscaling.knative.dev/scale-down-delay",
                "autoscaling.knative.dev/scale-to-zero-pod-retention-period",
                "autoscaling.knative.dev/metric",
            ]).prop_map(str::to_owned),
            quantity_or_duration(),
            0..6,
        ),
        raw in quantity_or_duration(),
    ) {
        let _ = serval_model::parse_autoscaling(&annotations, "spec.template.metadata.annotations");
        let _ = serval_model::parse_duration(&raw);
        let _ = serval_model::parse_memory(&raw);
        let _ = serval_model::parse_cpu(&raw);
        let _ = serval_model::validate_name(&raw, 63);
    }

    #[test]
    fn mutated_manifests(
        document in service(),
        trigger in eventing("Trigger"),
        mutations in prop::collection::vec(mutation(), 1..5),
    ) {
        let json = serde_json::to_string_pretty(&document).map_err(|e| TestCaseError::fail(e.to_string()))?;
        check_text::<Service>(&mutate(&json, &mutations), validated_service)?;
        check_text::<Service>(&mutate(&yaml(&document)?, &mutations), validated_service)?;
        let both = format!("{}---\n{}", yaml(&document)?, yaml(&trigger)?);
        check_text::<Trigger>(&mutate(&both, &mutations), validated_trigger)?;
        check_text::<PingSource>(&mutate(&both, &mutations), validated_ping_source)?;
    }
}
