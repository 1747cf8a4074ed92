//! Reading user-supplied JSON (model configs, golden cases) strictly: a key that is absent (or
//! `null`) takes its default, a key that is present must be valid, and an invalid one is an error
//! naming the file and the key, never silently replaced by a default.

use std::ops::RangeInclusive;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The keys of one JSON object in a file; `prefix` (e.g. `config.`) is how errors name them.
pub(crate) struct Keys<'a> {
    file: &'a str,
    prefix: &'a str,
    obj: Option<&'a Map<String, Value>>,
}

impl<'a> Keys<'a> {
    /// The object `v`; an absent or `null` object reads as empty, anything else is an error.
    pub fn new(file: &'a str, prefix: &'a str, v: &'a Value) -> Result<Keys<'a>> {
        let obj = match v {
            Value::Null => None,
            Value::Object(m) => Some(m),
            other => {
                let name = prefix.trim_end_matches('.');
                return Err(Error::Case {
                    file: file.into(),
                    msg: format!("'{name}' must be a JSON object, got {other}"),
                });
            }
        };
        Ok(Keys { file, prefix, obj })
    }

    pub fn err(&self, msg: impl Into<String>) -> Error {
        Error::Case {
            file: self.file.into(),
            msg: msg.into(),
        }
    }

    /// The key's value unless it is absent or `null`.
    pub fn get(&self, k: &str) -> Option<&'a Value> {
        self.obj?.get(k).filter(|v| !v.is_null())
    }

    /// Key names present in the object.
    pub fn names(&self) -> impl Iterator<Item = &'a String> {
        self.obj.into_iter().flat_map(|m| m.keys())
    }

    fn bad(&self, k: &str, what: &str, v: &Value) -> Error {
        self.err(format!("key '{}{k}' must be {what}, got {v}", self.prefix))
    }

    /// A non-negative integer (`2.5`, `-3` and `"30"` are errors).
    pub fn usize(&self, k: &str) -> Result<Option<usize>> {
        self.get(k)
            .map(|v| {
                v.as_u64()
                    .and_then(|x| usize::try_from(x).ok())
                    .ok_or_else(|| self.bad(k, "a non-negative integer", v))
            })
            .transpose()
    }

    /// A non-negative integer within `range`.
    pub fn usize_in(&self, k: &str, range: RangeInclusive<usize>) -> Result<Option<usize>> {
        match self.usize(k)? {
            Some(n) if !range.contains(&n) => Err(self.err(format!(
                "key '{}{k}' = {n} is outside {}..={}",
                self.prefix,
                range.start(),
                range.end()
            ))),
            n => Ok(n),
        }
    }

    /// A required integer within `range`.
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))] // only the golden cases use it
    pub fn require_usize_in(&self, k: &str, range: RangeInclusive<usize>) -> Result<usize> {
        self.usize_in(k, range)?
            .ok_or_else(|| self.err(format!("required key '{}{k}' is missing", self.prefix)))
    }

    /// A finite number.
    pub fn f64(&self, k: &str) -> Result<Option<f64>> {
        self.get(k)
            .map(|v| {
                v.as_f64()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| self.bad(k, "a finite number", v))
            })
            .transpose()
    }

    /// A finite number greater than zero.
    pub fn positive_f64(&self, k: &str) -> Result<Option<f64>> {
        match self.f64(k)? {
            Some(x) if x <= 0.0 => Err(self.bad(k, "a positive number", &Value::from(x))),
            x => Ok(x),
        }
    }

    pub fn bool(&self, k: &str) -> Result<Option<bool>> {
        self.get(k)
            .map(|v| v.as_bool().ok_or_else(|| self.bad(k, "true or false", v)))
            .transpose()
    }

    pub fn str(&self, k: &str) -> Result<Option<&'a str>> {
        self.get(k)
            .map(|v| v.as_str().ok_or_else(|| self.bad(k, "a string", v)))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn present_but_invalid_values_are_named_and_absent_ones_are_none() {
        let v = serde_json::json!({"a": -3, "b": 2.5, "c": "30", "d": 100000, "e": 7, "f": null});
        let k = Keys::new("case.json", "config.", &v).unwrap();
        for key in ["a", "b", "c"] {
            let e = k.usize(key).unwrap_err().to_string();
            assert!(e.contains(&format!("'config.{key}'")), "{e}");
        }
        let e = k.usize_in("d", 1..=1000).unwrap_err().to_string();
        assert!(e.contains("'config.d' = 100000 is outside 1..=1000"), "{e}");
        assert_eq!(k.usize_in("e", 1..=1000).unwrap(), Some(7));
        assert_eq!(k.usize("f").unwrap(), None);
        assert_eq!(k.usize("absent").unwrap(), None);
        assert!(k.str("e").is_err() && k.bool("e").is_err());
        assert!(Keys::new("case.json", "config.", &serde_json::json!(3)).is_err());
    }
}
