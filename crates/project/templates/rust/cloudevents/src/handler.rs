//! The function: serval calls `handle` with every CloudEvent that arrives.

use crate::cloudevent::CloudEvent;

/// Answers an event with another (a broker takes it as a new event), or with none.
/// `event.data` holds the data's bytes (JSON text when `datacontenttype` is JSON).
pub fn handle(event: &CloudEvent) -> Option<CloudEvent> {
    if event.ty.ends_with(".reply") {
        return None; // never answer a reply: no event loops through a broker
    }
    let mut reply = CloudEvent::new(format!("{}.reply", event.ty), "{{name}}");
    reply.subject = Some(event.id.clone());
    reply.datacontenttype = event.datacontenttype.clone();
    reply.data = event.data.clone();
    Some(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> CloudEvent {
        let mut event = CloudEvent::new("com.example.order", "/shop");
        event.data = br#"{"item": "book"}"#.to_vec();
        event
    }

    #[test]
    fn answers_an_event_with_its_data() {
        let event = order();
        let reply = handle(&event).expect("a reply");
        assert_eq!(reply.ty, "com.example.order.reply");
        assert_eq!(reply.subject.as_deref(), Some(event.id.as_str()));
        assert_eq!(reply.data_text(), r#"{"item": "book"}"#);
    }

    #[test]
    fn does_not_answer_a_reply() {
        let mut event = order();
        event.ty = "com.example.order.reply".into();
        assert_eq!(handle(&event), None);
    }
}
