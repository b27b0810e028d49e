//! Durations as people write them: `90s`, `5m`, `1h`, `1h30m`, `2d` (humantime's units), or a plain
//! integer in the field's own unit (seconds for `*_secs`, milliseconds for `*_ms`). Every setting
//! and flag field counted in seconds reads both forms; the API keeps rendering integers.

use std::time::Duration;

use serde::Deserializer;
use serde::de::{self, Visitor};

/// The unit a plain integer is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Secs,
    Millis,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Secs => "seconds",
            Unit::Millis => "milliseconds",
        }
    }

    fn count(self, d: Duration) -> Option<u64> {
        match self {
            Unit::Secs if d.subsec_nanos() == 0 => Some(d.as_secs()),
            Unit::Millis if d.subsec_nanos().is_multiple_of(1_000_000) => u64::try_from(d.as_millis()).ok(),
            _ => None,
        }
    }
}

/// `text` as a count of `unit`: digits alone are already that count; anything else is a duration
/// (`90s`, `5m`, `1h30m`) that must be a whole number of `unit`.
pub fn parse(text: &str, unit: Unit) -> Result<u64, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map_err(|_| format!("{text:?} is too large"));
    }
    let d = humantime::parse_duration(text).map_err(|e| {
        format!("{text:?} is not a duration ({e}): write an integer of {} or e.g. 90s, 5m, 1h30m", unit.name())
    })?;
    unit.count(d).ok_or_else(|| format!("{text:?} is not a whole number of {}", unit.name()))
}

/// [`parse`] in seconds: the value parser of the command line's `*_secs` options.
pub fn parse_secs(text: &str) -> Result<u64, String> {
    parse(text, Unit::Secs)
}

/// [`parse`] in milliseconds: the value parser of the command line's `*_ms` options.
pub fn parse_millis(text: &str) -> Result<u64, String> {
    parse(text, Unit::Millis)
}

/// What the OpenAPI document says a seconds field accepts: an integer of seconds, or a duration
/// string (the pattern shows the usual forms; humantime's other units are accepted too). Answers
/// always carry the integer.
pub fn secs_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(utoipa::openapi::schema::SchemaFormat::KnownFormat(
                    utoipa::openapi::schema::KnownFormat::Int64,
                )))
                .minimum(Some(0)),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(r"^([0-9]+|([0-9]+(s|m|h|d))+)$"))
                .examples(["90s", "5m", "1h30m"]),
        )
        .description(Some(
            "seconds: an integer, or a duration string such as \"90s\", \"5m\", \"1h30m\" (answers carry the integer)",
        ))
        .into()
}

/// A non-negative integer or a duration string, as a count of `unit`.
struct CountVisitor(Unit);

impl Visitor<'_> for CountVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "an integer of {} or a duration such as \"90s\", \"5m\", \"1h30m\"", self.0.name())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom(format!("{v} is negative")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        parse(v, self.0).map_err(E::custom)
    }
}

/// `#[serde(deserialize_with = "duration::secs")]`: seconds as an integer or a duration string.
pub fn secs<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(CountVisitor(Unit::Secs))
}

/// [`secs`] for an optional field (absent or `null` = `None`).
pub fn opt_secs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    opt(d, Unit::Secs)
}

/// Milliseconds as an integer or a duration string, for an optional field.
pub fn opt_millis<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    opt(d, Unit::Millis)
}

fn opt<'de, D: Deserializer<'de>>(d: D, unit: Unit) -> Result<Option<u64>, D::Error> {
    struct OptVisitor(Unit);
    impl<'de> Visitor<'de> for OptVisitor {
        type Value = Option<u64>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            CountVisitor(self.0).expecting(f)
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(CountVisitor(self.0)).map(Some)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            CountVisitor(self.0).visit_u64(v).map(Some)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            CountVisitor(self.0).visit_i64(v).map(Some)
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            CountVisitor(self.0).visit_str(v).map(Some)
        }
    }
    d.deserialize_option(OptVisitor(unit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_the_unit_and_strings_are_durations() {
        for (text, secs) in [("90", 90), ("90s", 90), ("5m", 300), ("1h", 3600), ("1h30m", 5400), (" 2d ", 172_800)] {
            assert_eq!(parse_secs(text), Ok(secs), "{text}");
        }
        assert_eq!(parse_millis("250"), Ok(250));
        assert_eq!(parse_millis("1s"), Ok(1000));
    }

    #[test]
    fn bad_durations_say_what_is_expected() {
        for bad in ["", "-5", "5 parsecs", "1.5s", "h", "99999999999999999999"] {
            let e = parse_secs(bad).expect_err(bad);
            assert!(e.contains(&format!("{:?}", bad.trim())), "{bad}: {e}");
        }
        assert!(parse_secs("1500ms").expect_err("not whole").contains("whole number of seconds"));
    }

    #[derive(Debug, serde::Deserialize)]
    struct Fields {
        #[serde(deserialize_with = "secs")]
        soak: u64,
        #[serde(default, deserialize_with = "opt_secs")]
        resync: Option<u64>,
    }

    #[test]
    fn json_and_toml_take_both_forms() {
        let f: Fields = serde_json::from_str(r#"{"soak": "1h30m", "resync": 5}"#).expect("valid");
        assert_eq!((f.soak, f.resync), (5400, Some(5)));
        let f: Fields = serde_json::from_str(r#"{"soak": 60, "resync": null}"#).expect("valid");
        assert_eq!((f.soak, f.resync), (60, None));
        let f: Fields = toml::from_str("soak = \"5m\"").expect("valid");
        assert_eq!((f.soak, f.resync), (300, None));
        let e = serde_json::from_str::<Fields>(r#"{"soak": "soon"}"#).expect_err("invalid");
        assert!(e.to_string().contains("not a duration"), "{e}");
        let e = serde_json::from_str::<Fields>(r#"{"soak": -1}"#).expect_err("invalid");
        assert!(e.to_string().contains("negative"), "{e}");
        assert!(serde_json::from_str::<Fields>(r#"{"soak": 1.5}"#).is_err());
    }
}
