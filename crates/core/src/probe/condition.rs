//! JSON conditions on a health answer: `loading_complete==true`, `skills_loaded>0`,
//! `status=="ok"`, `db.state!=down`.

use serde_json::Value;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
}

/// One condition on a field of a JSON document.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// Dotted path: `a.b.0.c` (numbers index arrays).
    pub path: Vec<String>,
    /// The comparison.
    pub op: Op,
    /// The value compared with: a JSON literal, or a bare word taken as a string.
    pub value: Value,
}

/// Why a condition could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "bad condition `{input}`: {why}; write FIELD OP VALUE with OP one of == != > >= < <=, e.g. `skills_loaded>0` or `status==\"ok\"`"
)]
pub struct ConditionError {
    /// The text given.
    pub input: String,
    /// What was wrong.
    pub why: &'static str,
}

impl Condition {
    /// Parse `FIELD OP VALUE`.
    pub fn parse(input: &str) -> Result<Self, ConditionError> {
        let err = |why| ConditionError { input: input.to_string(), why };
        // Two-character operators first so `>=` is not read as `>`.
        const OPS: [(&str, Op); 6] =
            [("==", Op::Eq), ("!=", Op::Ne), (">=", Op::Ge), ("<=", Op::Le), (">", Op::Gt), ("<", Op::Lt)];
        let (at, text, op) = OPS
            .iter()
            .filter_map(|(text, op)| input.find(text).map(|at| (at, *text, *op)))
            .min_by_key(|(at, text, _)| (*at, std::cmp::Reverse(text.len())))
            .ok_or_else(|| err("no operator"))?;
        let field = input[..at].trim();
        let raw = input[at + text.len()..].trim();
        if field.is_empty() {
            return Err(err("no field before the operator"));
        }
        if raw.is_empty() {
            return Err(err("no value after the operator"));
        }
        let path: Vec<String> = field.split('.').map(str::to_string).collect();
        if path.iter().any(|p| p.is_empty()) {
            return Err(err("empty part in the field path"));
        }
        let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
        if matches!(op, Op::Gt | Op::Ge | Op::Lt | Op::Le) && !value.is_number() {
            return Err(err("ordering operators need a number"));
        }
        Ok(Condition { path, op, value })
    }

    /// The field this condition reads, dotted.
    pub fn field(&self) -> String {
        self.path.join(".")
    }

    /// Whether `doc` satisfies it; a missing field never does.
    pub fn holds(&self, doc: &Value) -> bool {
        let Some(actual) = lookup(doc, &self.path) else {
            return false;
        };
        match self.op {
            Op::Eq => loose_eq(actual, &self.value),
            Op::Ne => !loose_eq(actual, &self.value),
            op => match (actual.as_f64(), self.value.as_f64()) {
                (Some(a), Some(b)) => match op {
                    Op::Gt => a > b,
                    Op::Ge => a >= b,
                    Op::Lt => a < b,
                    _ => a <= b,
                },
                _ => false,
            },
        }
    }
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match self.op {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
        };
        write!(f, "{}{op}{}", self.field(), self.value)
    }
}

/// The value at a dotted path.
pub fn lookup<'a>(doc: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(doc, |v, key| match v {
        Value::Object(map) => map.get(key),
        Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// Numbers compare by value (1 == 1.0); everything else structurally.
fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_evaluates() {
        let doc = json!({"loading_complete": true, "skills_loaded": 3, "status": "ok", "db": {"shards": [{"up": 1}]}});
        for (text, expect) in [
            ("loading_complete==true", true),
            ("loading_complete == false", false),
            ("skills_loaded>0", true),
            ("skills_loaded>=3", true),
            ("skills_loaded<3", false),
            ("skills_loaded<=3.0", true),
            ("skills_loaded==3.0", true),
            ("status==\"ok\"", true),
            ("status==ok", true),
            ("status!=ok", false),
            ("db.shards.0.up==1", true),
            ("db.shards.1.up==1", false),
            ("missing==null", false),
        ] {
            let c = Condition::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(c.holds(&doc), expect, "{text}");
        }
    }

    #[test]
    fn rejects_bad_conditions_with_the_reason() {
        for (text, why) in [
            ("skills_loaded", "no operator"),
            ("==3", "no field before the operator"),
            ("a==", "no value after the operator"),
            ("a..b==1", "empty part in the field path"),
            ("a>x", "ordering operators need a number"),
        ] {
            let e = Condition::parse(text).expect_err(text);
            assert_eq!(e.why, why, "{text}");
            assert!(e.to_string().contains("FIELD OP VALUE"));
        }
    }

    #[test]
    fn ordering_on_a_non_number_field_is_false_not_a_panic() {
        let c = Condition::parse("status>1").expect("parses");
        assert!(!c.holds(&json!({"status": "ok"})));
    }
}
