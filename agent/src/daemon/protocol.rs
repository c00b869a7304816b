//! The agent's socket protocol: newline-delimited JSON requests from clients and the lines the
//! agent sends back.
//!
//! Requests are one JSON object per line:
//! `{"subscribe": {"snapshots": true, "events": false}}`,
//! `{"control": {"action": "set_builders", "value": 4}}` and `{"reset": true}`.
//! Every line the agent sends carries a `type`: `snapshot`, `event`, `error` or `ok`.

use mountscope_common::snapshot::{MountApi, Snapshot, Strategy};
use serde::{Deserialize, Serialize};

/// Maximum length of a request line in bytes, newline excluded. Longer lines are discarded up to
/// their newline and answered with an error.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// One client request.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Chooses which streams the client receives. A later subscribe replaces an earlier one.
    Subscribe {
        #[serde(default)]
        snapshots: bool,
        #[serde(default)]
        events: bool,
    },
    /// Changes the overlay executor's settings.
    Control(ControlAction),
    /// Resets the statistics shown in snapshots when `true`. Exported metrics keep counting.
    Reset(bool),
}

/// An executor change. Each has an `action` name and, where it takes one, a `value`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(
    tag = "action",
    content = "value",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum ControlAction {
    ToggleStrategy,
    /// `per_layer` (A) or `common_parent` (B).
    SetStrategy(Strategy),
    SetBuilders(u32),
    SetLayers(u32),
    ToggleIdmap,
    SetIdmap(bool),
    /// `auto`, `legacy` or `fsconfig`.
    SetMountApi(MountApi),
    NextMountApi,
    TogglePause,
    SetPaused(bool),
}

/// A line the agent sends. Snapshot and event lines carry the record's fields next to `type`.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply<'a, E: Serialize> {
    Snapshot(&'a Snapshot),
    Event(&'a E),
    Error { message: String },
    Ok,
}

/// Serializes an `error` reply line, newline included.
pub fn error_line(message: impl Into<String>) -> String {
    let reply: Reply<'_, ()> = Reply::Error {
        message: message.into(),
    };
    line(&reply)
}

/// Serializes the `ok` reply line, newline included.
pub fn ok_line() -> String {
    let reply: Reply<'_, ()> = Reply::Ok;
    line(&reply)
}

/// Serializes any reply as one line with its newline.
pub fn line<E: Serialize>(reply: &Reply<'_, E>) -> String {
    // Serializing fails only for non-string map keys, which these types do not have, so the
    // fallback error line is not expected in practice.
    let mut text = serde_json::to_string(reply).unwrap_or_else(|e| {
        serde_json::json!({"type": "error", "message": format!("failed to serialize: {e}")})
            .to_string()
    });
    text.push('\n');
    text
}

/// A line received from the agent, as a client reads it.
#[derive(Debug)]
pub enum StreamLine {
    Snapshot(Box<Snapshot>),
    /// The event's fields, kept as JSON: clients only pass events on.
    Event(serde_json::Value),
    Error(String),
    Ok,
}

impl StreamLine {
    /// Parses one line the agent sent.
    pub fn parse(text: &str) -> Result<StreamLine, String> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("invalid JSON from the agent: {e}"))?;
        let kind = value
            .get("type")
            .and_then(serde_json::Value::as_str)
            .ok_or("a line from the agent has no `type`")?;
        match kind {
            "snapshot" => serde_json::from_value(value)
                .map(|s| StreamLine::Snapshot(Box::new(s)))
                .map_err(|e| format!("invalid snapshot from the agent: {e}")),
            "event" => Ok(StreamLine::Event(value)),
            "error" => Ok(StreamLine::Error(
                value
                    .get("message")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("(no message)")
                    .to_string(),
            )),
            "ok" => Ok(StreamLine::Ok),
            other => Err(format!("unknown line type `{other}` from the agent")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_parses() {
        let request: Request =
            serde_json::from_str(r#"{"subscribe": {"snapshots": true, "events": false}}"#).unwrap();
        assert_eq!(
            request,
            Request::Subscribe {
                snapshots: true,
                events: false
            }
        );
    }

    #[test]
    fn control_with_value_parses() {
        let request: Request =
            serde_json::from_str(r#"{"control": {"action": "set_builders", "value": 4}}"#).unwrap();
        assert_eq!(request, Request::Control(ControlAction::SetBuilders(4)));
    }

    #[test]
    fn control_without_value_parses() {
        let request: Request =
            serde_json::from_str(r#"{"control": {"action": "toggle_strategy"}}"#).unwrap();
        assert_eq!(request, Request::Control(ControlAction::ToggleStrategy));
    }

    #[test]
    fn strategy_value_parses() {
        let request: Request = serde_json::from_str(
            r#"{"control": {"action": "set_strategy", "value": "common_parent"}}"#,
        )
        .unwrap();
        assert_eq!(
            request,
            Request::Control(ControlAction::SetStrategy(Strategy::CommonParent))
        );
    }

    #[test]
    fn reset_parses() {
        let request: Request = serde_json::from_str(r#"{"reset": true}"#).unwrap();
        assert_eq!(request, Request::Reset(true));
    }

    #[test]
    fn unknown_request_rejected() {
        assert!(serde_json::from_str::<Request>(r#"{"shutdown": true}"#).is_err());
    }

    #[test]
    fn unknown_action_rejected() {
        let text = r#"{"control": {"action": "reboot"}}"#;
        assert!(serde_json::from_str::<Request>(text).is_err());
    }

    #[test]
    fn error_line_is_tagged() {
        let text = error_line("bad");
        assert_eq!(text, "{\"type\":\"error\",\"message\":\"bad\"}\n");
        assert!(matches!(StreamLine::parse(&text), Ok(StreamLine::Error(m)) if m == "bad"));
    }

    #[test]
    fn ok_line_is_tagged() {
        assert_eq!(ok_line(), "{\"type\":\"ok\"}\n");
    }
}
