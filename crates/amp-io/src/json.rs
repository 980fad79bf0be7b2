//! Small helpers for the JSON readers of every crate.
use serde_json::Value;

/// How a JSON value reads in an error message ("a string", "a list", ...), e.g.
/// "expected a list of turns, found a string".
pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_every_kind() {
        let cases = [
            ("null", "null"),
            ("true", "a boolean"),
            ("1.5", "a number"),
            ("\"x\"", "a string"),
            ("[]", "a list"),
            ("{}", "an object"),
        ];
        for (json, want) in cases {
            assert_eq!(kind_of(&serde_json::from_str(json).unwrap()), want);
        }
    }
}
