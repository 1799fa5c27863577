//! Serde helpers for PgBouncer-style values: seconds as numbers (fractions allowed) and lists given as
//! TOML arrays or comma-separated strings.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer, de::Error};

#[derive(Deserialize)]
#[serde(untagged)]
enum Number {
    Int(i64),
    Float(f64),
}

fn to_duration<E: Error>(n: Number) -> Result<Duration, E> {
    let secs = match n {
        Number::Int(i) => i as f64,
        Number::Float(f) => f,
    };
    if !secs.is_finite() || !(0.0..=100.0 * 365.0 * 86_400.0).contains(&secs) {
        return Err(E::custom(format!("{secs} is not a valid number of seconds (0 or more)")));
    }
    Ok(Duration::from_secs_f64(secs))
}

pub fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    to_duration(Number::deserialize(d)?)
}

pub fn seconds_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    to_duration(Number::deserialize(d)?).map(Some)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum List {
    One(String),
    Many(Vec<String>),
}

pub fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let items = match List::deserialize(d)? {
        List::One(s) => s.split(',').map(|p| p.trim().to_string()).collect(),
        List::Many(v) => v,
    };
    Ok(items.into_iter().filter(|s| !s.is_empty()).collect())
}

pub fn default_host() -> String {
    "127.0.0.1".into()
}

pub fn default_port() -> u16 {
    5432
}

/// Seconds as a number (integer when whole), the way they are written in the config.
pub fn ser_seconds<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    if d.subsec_nanos() == 0 { s.serialize_u64(d.as_secs()) } else { s.serialize_f64(d.as_secs_f64()) }
}

/// A list as the comma-separated string PgBouncer shows.
pub fn ser_list<S: Serializer>(v: &[String], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&v.join(","))
}

/// The field names serde derives for `T` (a struct), in declaration order: a deserializer that only
/// records what `deserialize_struct` is asked for.
pub fn struct_fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Fields<'a>(&'a mut &'static [&'static str]);
    impl<'de> Deserializer<'de> for Fields<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(Self::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(Self::Error::custom("fields recorded"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Fields(&mut fields));
    fields
}
