//! The rules every append request must follow, checked before a backend sees it.

use crate::{
    APPEND_EVENTS_MAX, APPEND_PAYLOAD_BYTES_MAX, AppendRequest, COMMAND_ID_LEN_MAX,
    EVENT_TYPE_LEN_MAX, METADATA_FIELD_LEN_MAX, PAYLOAD_LEN_MAX, STREAM_NAME_LEN_MAX, StoreError,
};

/// Checks `request` against the limits of the contract: at least one write, every write with at
/// least one event, no stream twice, names within their length limits and free of control
/// characters, payloads within their limits. Both backends call it before anything else, so a
/// rejected request writes nothing anywhere.
pub fn validate_request(request: &AppendRequest) -> Result<(), StoreError> {
    if request.writes.is_empty() {
        return Err(invalid("the request has no stream writes".to_owned()));
    }
    if let Some(command_id) = &request.command_id {
        check_name("command id", command_id, COMMAND_ID_LEN_MAX)?;
    }
    // Quadratic for the usual handful of streams, a set beyond that (10,000 one-event writes).
    let mut seen = (request.writes.len() > 16)
        .then(|| std::collections::HashSet::with_capacity(request.writes.len()));
    let mut events_count: usize = 0;
    let mut payload_bytes: usize = 0;
    for (i, write) in request.writes.iter().enumerate() {
        check_name("stream name", &write.stream, STREAM_NAME_LEN_MAX)?;
        let twice = match seen.as_mut() {
            Some(seen) => !seen.insert(write.stream.as_str()),
            None => request.writes[..i].iter().any(|w| w.stream == write.stream),
        };
        if twice {
            return Err(invalid(format!(
                "stream {:?} appears twice in one request",
                write.stream
            )));
        }
        if write.events.is_empty() {
            return Err(invalid(format!(
                "the write to stream {:?} has no events",
                write.stream
            )));
        }
        events_count = events_count.saturating_add(write.events.len());
        for event in &write.events {
            check_name("event type", &event.event_type, EVENT_TYPE_LEN_MAX)?;
            if event.payload.len() > PAYLOAD_LEN_MAX {
                return Err(invalid(format!(
                    "a payload of {} bytes exceeds the limit of {PAYLOAD_LEN_MAX}",
                    event.payload.len()
                )));
            }
            payload_bytes = payload_bytes.saturating_add(event.payload.len());
            if let Some(id) = &event.metadata.command_id {
                check_field("metadata command id", id)?;
            }
            if let Some(id) = &event.metadata.api_key_id {
                check_field("metadata api key id", id)?;
            }
        }
    }
    if events_count > APPEND_EVENTS_MAX {
        return Err(invalid(format!(
            "{events_count} events exceed the limit of {APPEND_EVENTS_MAX} per request"
        )));
    }
    if payload_bytes > APPEND_PAYLOAD_BYTES_MAX {
        return Err(invalid(format!(
            "{payload_bytes} payload bytes exceed the limit of {APPEND_PAYLOAD_BYTES_MAX} per request"
        )));
    }
    Ok(())
}

fn check_name(what: &str, value: &str, len_max: usize) -> Result<(), StoreError> {
    if value.is_empty() {
        return Err(invalid(format!("the {what} is empty")));
    }
    if value.len() > len_max {
        return Err(invalid(format!(
            "the {what} is {} bytes long, the limit is {len_max}",
            value.len()
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(format!(
            "the {what} {value:?} has control characters"
        )));
    }
    Ok(())
}

fn check_field(what: &str, value: &str) -> Result<(), StoreError> {
    if value.len() > METADATA_FIELD_LEN_MAX {
        return Err(invalid(format!(
            "the {what} is {} bytes long, the limit is {METADATA_FIELD_LEN_MAX}",
            value.len()
        )));
    }
    if value.contains('\0') {
        return Err(invalid(format!("the {what} contains a NUL character")));
    }
    Ok(())
}

fn invalid(reason: String) -> StoreError {
    StoreError::InvalidRequest(reason)
}
