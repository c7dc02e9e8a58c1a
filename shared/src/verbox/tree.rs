//! A JSON tree that borrows its strings from the body it was read from.
//!
//! `serde_json::Value` copies every key and string into an allocation of its own and every object
//! into a `BTreeMap`: on a real dialog that tree was two thirds of the cost of parsing a webhook,
//! which ingest does for each one. This tree borrows every string without escapes and keeps an
//! object as the list it was sent as, answering lookups as `Value` does: of duplicate keys, the last
//! wins. Its one use is to be read once by the parser and dropped.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

#[derive(Debug, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Object<'a>),
}

/// An object's members in the order they were sent, duplicates included.
#[derive(Debug, PartialEq, Default)]
pub struct Object<'a>(Vec<(Cow<'a, str>, Json<'a>)>);

impl<'a> Json<'a> {
    pub fn as_object(&self) -> Option<&Object<'a>> {
        match self {
            Json::Object(o) => Some(o),
            _ => None,
        }
    }

    /// The value of `key` in an object; `None` for anything else.
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        self.as_object()?.get(key)
    }

    pub fn as_array(&self) -> Option<&[Json<'a>]> {
        match self {
            Json::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The same value as a `serde_json::Value`, owning its strings.
    pub fn to_value(&self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => Value::Number(n.clone()),
            Json::String(s) => Value::String(s.clone().into_owned()),
            Json::Array(a) => Value::Array(a.iter().map(Json::to_value).collect()),
            Json::Object(o) => Value::Object(o.to_map()),
        }
    }
}

impl<'a> Object<'a> {
    /// The value of `key`: of duplicates the last, as `serde_json::Value` keeps it.
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Each key once, with its last value, in key order: what iterating a `serde_json::Map` gives.
    pub fn entries(&self) -> BTreeMap<&str, &Json<'a>> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v)).collect()
    }

    pub fn to_map(&self) -> Map<String, Value> {
        self.0.iter().map(|(k, v)| (k.clone().into_owned(), v.to_value())).collect()
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

/// Reads any JSON value the way `serde_json::Value` does, but borrowing strings where it can.
struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Json<'de>, E> {
        Ok(Json::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Json<'de>, E> {
        Ok(Json::Number(n.into()))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Json<'de>, E> {
        Ok(Number::from_f64(n).map_or(Json::Null, Json::Number))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E>(self, s: String) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(s)))
    }

    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut members = Vec::new();
        while let Some((key, value)) = map.next_entry::<Json<'de>, Json<'de>>()? {
            let Json::String(key) = key else {
                return Err(serde::de::Error::custom("an object key that is not a string"));
            };
            members.push((key, value));
        }
        Ok(Json::Object(Object(members)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reading with this tree and converting gives what `serde_json::Value` reads, error or not.
    fn agrees_with_value(bytes: &[u8]) -> Result<(), TestCaseError> {
        let ours = serde_json::from_slice::<Json>(bytes).map(|j| j.to_value()).map_err(|e| e.to_string());
        let theirs = serde_json::from_slice::<Value>(bytes).map_err(|e| e.to_string());
        prop_assert_eq!(ours, theirs);
        Ok(())
    }

    #[test]
    fn strings_without_escapes_are_borrowed() {
        let body = br#"{"plain":"abc","escaped":"a\"b"}"#;
        let json: Json = serde_json::from_slice(body).unwrap();
        let object = json.as_object().unwrap();
        assert!(matches!(object.get("plain"), Some(Json::String(Cow::Borrowed("abc")))));
        assert!(matches!(object.get("escaped"), Some(Json::String(Cow::Owned(s))) if s == "a\"b"));
    }

    #[test]
    fn duplicate_keys_answer_as_value_does() {
        let body = br#"{"a":1,"b":2,"a":null}"#;
        let json: Json = serde_json::from_slice(body).unwrap();
        let object = json.as_object().unwrap();
        assert_eq!(object.get("a"), Some(&Json::Null));
        assert_eq!(object.entries().into_keys().collect::<Vec<_>>(), ["a", "b"]);
        agrees_with_value(body).unwrap();
    }

    #[test]
    fn edge_values_read_as_value_reads_them() {
        for body in [
            &b"-0"[..],
            b"1e400",
            b"18446744073709551616",
            b"-9223372036854775809",
            b"1.5e-400",
            br#""\ud800""#,
            b"[1,]",
            b"{\"a\":1 x",
            b"\"\xff\"",
            &[b'['; 200],
        ] {
            agrees_with_value(body).unwrap();
        }
    }

    proptest! {
        #[test]
        fn any_json_reads_as_value_reads_it(value in crate::verbox::tests::arbitrary_json()) {
            agrees_with_value(value.to_string().as_bytes())?;
        }

        #[test]
        fn any_bytes_read_as_value_reads_them(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            agrees_with_value(&bytes)?;
        }
    }
}
