//! Event consumption: which CloudEvents a `listen` task (or a `schedule.on`) takes, and when
//! it has what it waits for. A [`Listening`] is offered events one at a time, in the order
//! they arrived, and says when its strategy is satisfied:
//!
//! - `one: <filter>` — the first event the filter takes;
//! - `all: [<filter>…]` — one event for each filter, in any order;
//! - `any: [<filter>…]` (an empty list takes every event) — the first event any filter
//!   takes, or, with `until`, events until the `until` expression holds (its input: the
//!   events consumed so far, as read) or until the `until` strategy is satisfied (the events
//!   that satisfy it are not consumed).
//!
//! A filter's `with` compares the event's attributes (`data` is the event's data): a runtime
//! expression (`${ .temperature > 38 }`) must hold with the attribute as its input; any
//! other value must equal the attribute. Events are CloudEvents in JSON (structured mode,
//! `data` as JSON when it is).

use serde_json::Value;

use crate::error::Error;
use crate::expr::{Scope, embedded, holds};

/// How consumed events are given back (`listen.read`): the data (the default), the whole
/// event, or the data as it came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    Data,
    Envelope,
    Raw,
}

impl Read {
    pub fn parse(read: Option<&str>) -> Result<Read, Error> {
        match read {
            None | Some("data") => Ok(Read::Data),
            Some("envelope") => Ok(Read::Envelope),
            Some("raw") => Ok(Read::Raw),
            Some(other) => Err(Error::validation(format!("listen.read is data, envelope or raw, not {other:?}"))),
        }
    }

    /// What a consumed event gives.
    pub fn take(self, event: &Value) -> Value {
        match self {
            Read::Envelope => event.clone(),
            Read::Data | Read::Raw => {
                event.get("data").or_else(|| event.get("data_base64")).cloned().unwrap_or_default()
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Strategy {
    One(Value),
    /// The filters, and which of them an event was consumed for.
    All(Vec<(Value, bool)>),
    Any {
        filters: Vec<Value>,
        until: Until,
    },
}

#[derive(Debug, Clone)]
enum Until {
    /// Without `until`: the first event taken ends the listening.
    First,
    Holds(String),
    Consumed(Box<Listening>),
}

/// A strategy being satisfied, event by event.
#[derive(Debug, Clone)]
pub struct Listening {
    strategy: Strategy,
    read: Read,
    consumed: Vec<Value>,
    done: bool,
}

impl Listening {
    /// The strategy of `to` (`listen.to`, `schedule.on`), giving consumed events as `read`.
    pub fn new(to: &Value, read: Read) -> Result<Listening, Error> {
        let filters = |list: &Value, field: &str| -> Result<Vec<Value>, Error> {
            let list = list.as_array().ok_or_else(|| Error::validation(format!("{field} is a list of filters")))?;
            list.iter().map(|f| checked_filter(f, field)).collect()
        };
        let strategy = if let Some(one) = to.get("one") {
            Strategy::One(checked_filter(one, "one")?)
        } else if let Some(all) = to.get("all") {
            Strategy::All(filters(all, "all")?.into_iter().map(|f| (f, false)).collect())
        } else if let Some(any) = to.get("any") {
            let until = match to.get("until") {
                None => Until::First,
                Some(Value::String(condition)) => Until::Holds(condition.clone()),
                Some(strategy) => Until::Consumed(Box::new(Listening::new(strategy, Read::Envelope)?)),
            };
            Strategy::Any { filters: filters(any, "any")?, until }
        } else {
            return Err(Error::validation("listen.to takes one, all or any"));
        };
        Ok(Listening { strategy, read, consumed: Vec::new(), done: false })
    }

    /// Offers the next event; whether the strategy is now satisfied. Events it does not
    /// take are ignored.
    pub fn offer(&mut self, event: &Value, scope: &Scope) -> Result<bool, Error> {
        if self.done {
            return Ok(true);
        }
        let taken = match &mut self.strategy {
            Strategy::One(filter) => {
                let taken = takes(filter, event, scope)?;
                self.done = taken;
                taken
            }
            Strategy::All(filters) => {
                let mut taken = false;
                for (filter, matched) in filters.iter_mut().filter(|(_, matched)| !*matched) {
                    if takes(filter, event, scope)? {
                        *matched = true;
                        taken = true;
                        break;
                    }
                }
                self.done = filters.iter().all(|(_, matched)| *matched);
                taken
            }
            Strategy::Any { filters, until } => {
                if let Until::Consumed(stop) = until
                    && stop.offer(event, scope)?
                {
                    self.done = true;
                    return Ok(true);
                }
                let mut taken = filters.is_empty();
                for filter in filters.iter() {
                    if taken {
                        break;
                    }
                    taken = takes(filter, event, scope)?;
                }
                if taken && matches!(until, Until::First) {
                    self.done = true;
                }
                taken
            }
        };
        if taken {
            self.consumed.push(self.read.take(event));
            if let Strategy::Any { until: Until::Holds(condition), .. } = &self.strategy {
                self.done = holds(condition, &Value::Array(self.consumed.clone()), scope)?;
            }
        }
        Ok(self.done)
    }

    /// The events consumed, as read, in the order they came.
    pub fn consumed(&self) -> &[Value] {
        &self.consumed
    }
}

/// A filter, checked: a mapping with `with`; `correlate` is not supported yet.
fn checked_filter(filter: &Value, field: &str) -> Result<Value, Error> {
    if filter.get("correlate").is_some() {
        return Err(Error::runtime(format!("{field}: serval does not correlate events yet")));
    }
    match filter.get("with") {
        Some(Value::Object(_)) => Ok(filter.clone()),
        _ => Err(Error::validation(format!("{field}: an event filter takes with: {{attributes}}"))),
    }
}

/// Whether `filter` takes `event`.
fn takes(filter: &Value, event: &Value, scope: &Scope) -> Result<bool, Error> {
    let Some(with) = filter["with"].as_object() else { return Ok(false) };
    for (attribute, wanted) in with {
        let actual = event.get(attribute).cloned().unwrap_or(Value::Null);
        let matched = match wanted {
            Value::String(text) => match embedded(text) {
                Some(_) => holds(text, &actual, scope)?,
                None => actual.as_str() == Some(text.as_str()),
            },
            other => &actual == other,
        };
        if !matched {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(kind: &str, data: Value) -> Value {
        json!({"specversion": "1.0", "id": "1", "source": "/t", "type": kind, "data": data})
    }

    fn listening(to: Value) -> Listening {
        Listening::new(&to, Read::Data).expect("strategy")
    }

    #[test]
    fn one_takes_the_first_matching_event() {
        let mut l = listening(json!({"one": {"with": {"type": "started"}}}));
        let scope = Scope::default();
        assert!(!l.offer(&event("other", json!(1)), &scope).expect("ok"));
        assert!(l.offer(&event("started", json!(2)), &scope).expect("ok"));
        assert_eq!(l.consumed(), &[json!(2)]);
    }

    #[test]
    fn all_needs_one_event_per_filter_with_data_expressions() {
        let mut l = listening(json!({"all": [
            {"with": {"type": "temperature", "data": "${ .temperature > 38 }"}},
            {"with": {"type": "bpm", "data": "${ .bpm < 60 or .bpm > 100 }"}},
        ]}));
        let scope = Scope::default();
        assert!(!l.offer(&event("bpm", json!({"bpm": 120})), &scope).expect("ok"));
        assert!(!l.offer(&event("temperature", json!({"temperature": 37})), &scope).expect("ok"));
        assert!(!l.offer(&event("bpm", json!({"bpm": 130})), &scope).expect("ok"), "that filter is satisfied");
        assert!(l.offer(&event("temperature", json!({"temperature": 39})), &scope).expect("ok"));
        assert_eq!(l.consumed(), &[json!({"bpm": 120}), json!({"temperature": 39})]);
    }

    #[test]
    fn any_until_an_expression_or_a_strategy() {
        let scope = Scope::default();
        let mut l = listening(json!({"any": [], "until": "${ length >= 3 }"}));
        assert!(!l.offer(&event("a", json!(1)), &scope).expect("ok"));
        assert!(!l.offer(&event("b", json!(2)), &scope).expect("ok"));
        assert!(l.offer(&event("c", json!(3)), &scope).expect("ok"));

        let mut l =
            listening(json!({"any": [{"with": {"type": "tick"}}], "until": {"one": {"with": {"type": "stop"}}}}));
        assert!(!l.offer(&event("tick", json!(1)), &scope).expect("ok"));
        assert!(!l.offer(&event("noise", json!(2)), &scope).expect("ok"));
        assert!(l.offer(&event("stop", json!(3)), &scope).expect("ok"));
        assert_eq!(l.consumed(), &[json!(1)]);

        let mut l = Listening::new(&json!({"any": [{"with": {"source": "/t"}}]}), Read::Envelope).expect("ok");
        assert!(l.offer(&event("x", json!(1)), &scope).expect("ok"));
        assert_eq!(l.consumed()[0]["type"], "x");
    }

    #[test]
    fn malformed_strategies_are_refused() {
        assert!(Listening::new(&json!({"some": []}), Read::Data).is_err());
        assert!(Listening::new(&json!({"one": {"type": "x"}}), Read::Data).is_err());
        assert!(Listening::new(&json!({"one": {"with": {"type": "x"}, "correlate": {}}}), Read::Data).is_err());
        assert!(Read::parse(Some("bytes")).is_err());
    }
}
