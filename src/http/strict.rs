//! A serde adapter that refuses a JSON array where a struct is expected, at any depth.
//!
//! serde's derived `Deserialize` for a struct also accepts a sequence of its fields in order (so
//! `[1, 2]` reads as a metrics sample of 1 request and 2 errors, and `[]` as a flag definition with
//! every default); `deny_unknown_fields` does not stop it. [`Strict`] wraps a deserializer and every
//! visitor, access and seed it hands on, so that each `deserialize_struct` anywhere in a body
//! accepts a JSON object only. Everything else passes through unchanged.

use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Unexpected, VariantAccess, Visitor,
};

/// A deserializer, access or seed whose structs must be JSON objects.
pub struct Strict<T>(pub T);

/// A visitor passed on by [`Strict`]; `is_struct` when it was asked for a struct.
pub struct StrictVisitor<V> {
    inner: V,
    is_struct: bool,
}

impl<V> StrictVisitor<V> {
    fn new(inner: V) -> Self {
        Self { inner, is_struct: false }
    }
}

macro_rules! forward_deserialize {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            self.0.$method(StrictVisitor::new(visitor))
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Strict<D> {
    type Error = D::Error;

    forward_deserialize!(
        deserialize_any deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
        deserialize_f32 deserialize_f64 deserialize_char deserialize_str deserialize_string deserialize_bytes
        deserialize_byte_buf deserialize_option deserialize_unit deserialize_seq deserialize_map
        deserialize_identifier deserialize_ignored_any
    );

    fn deserialize_unit_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_unit_struct(name, StrictVisitor::new(visitor))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_newtype_struct(name, StrictVisitor::new(visitor))
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_tuple(len, StrictVisitor::new(visitor))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_tuple_struct(name, len, StrictVisitor::new(visitor))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_struct(name, fields, StrictVisitor { inner: visitor, is_struct: true })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_enum(name, variants, StrictVisitor::new(visitor))
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty))*) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
            self.inner.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for StrictVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit!(
        visit_bool(bool) visit_i8(i8) visit_i16(i16) visit_i32(i32) visit_i64(i64) visit_i128(i128)
        visit_u8(u8) visit_u16(u16) visit_u32(u32) visit_u64(u64) visit_u128(u128) visit_f32(f32) visit_f64(f64)
        visit_char(char) visit_str(&str) visit_borrowed_str(&'de str) visit_string(String) visit_bytes(&[u8])
        visit_borrowed_bytes(&'de [u8]) visit_byte_buf(Vec<u8>)
    );

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        self.inner.visit_some(Strict(deserializer))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        self.inner.visit_newtype_struct(Strict(deserializer))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        if self.is_struct {
            return Err(de::Error::invalid_type(Unexpected::Seq, &self));
        }
        self.inner.visit_seq(Strict(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.inner.visit_map(Strict(map))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.inner.visit_enum(Strict(data))
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Strict<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        self.0.deserialize(Strict(deserializer))
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Strict<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, A::Error> {
        self.0.next_element_seed(Strict(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Strict<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, A::Error> {
        self.0.next_key_seed(Strict(seed))
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.0.next_value_seed(Strict(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for Strict<A> {
    type Error = A::Error;
    type Variant = Strict<A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<(T::Value, Self::Variant), A::Error> {
        self.0.variant_seed(Strict(seed)).map(|(value, variant)| (value, Strict(variant)))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Strict<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.0.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.0.newtype_variant_seed(Strict(seed))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.0.tuple_variant(len, StrictVisitor::new(visitor))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.0.struct_variant(fields, StrictVisitor { inner: visitor, is_struct: true })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Deserialize)]
    struct Point {
        x: i32,
        #[serde(default)]
        y: i32,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Shape {
        Dot,
        At(Point),
        Pair(i32, i32),
        Box { corner: Point },
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Body {
        points: Vec<Point>,
        #[serde(default)]
        origin: Option<Point>,
        #[serde(default)]
        named: BTreeMap<String, Point>,
        #[serde(default)]
        shapes: Vec<Shape>,
        #[serde(default)]
        pair: Option<(u8, String)>,
    }

    fn strict<T: for<'de> Deserialize<'de>>(json: &str) -> Result<T, serde_json::Error> {
        T::deserialize(Strict(&mut serde_json::Deserializer::from_str(json)))
    }

    #[test]
    fn serde_alone_takes_an_array_for_a_struct() {
        assert_eq!(serde_json::from_str::<Point>("[1, 2]").ok(), Some(Point { x: 1, y: 2 }));
    }

    #[test]
    fn an_array_for_a_struct_is_refused_at_any_depth() {
        for json in [
            "[1, 2]",
            "[]",
            r#"{"points": [[1, 2]]}"#,
            r#"{"points": [], "origin": [1]}"#,
            r#"{"points": [], "named": {"a": [1]}}"#,
            r#"{"points": [], "shapes": [{"at": [1, 2]}]}"#,
            r#"{"points": [], "shapes": [{"box": [{"x": 1}]}]}"#,
            r#"{"points": [], "shapes": [{"box": {"corner": [1]}}]}"#,
        ] {
            let e = strict::<Body>(json).err().unwrap_or_else(|| panic!("{json} was accepted"));
            assert!(e.is_data(), "{json}: {e}");
            assert!(e.to_string().starts_with("invalid type: sequence, expected struct"), "{json}: {e}");
        }
    }

    #[test]
    fn everything_else_reads_as_serde_reads_it() {
        let json = r#"{"points": [{"x": 1}, {"x": 2, "y": 3}], "origin": null,
            "named": {"a": {"x": 4}}, "shapes": ["dot", {"at": {"x": 5}}, {"pair": [6, 7]},
            {"box": {"corner": {"x": 8}}}], "pair": [9, "nine"]}"#;
        let expected: Body = serde_json::from_str(json).expect("serde reads it");
        assert_eq!(strict::<Body>(json).expect("strict reads it"), expected);
        assert_eq!(strict::<Vec<u8>>("[1, 2]").expect("a sequence"), vec![1, 2]);
        assert_eq!(strict::<(i32, bool)>("[1, true]").expect("a tuple"), (1, true));
        for wrong in [r#"{"points": 1}"#, r#"{"points": [{"x": "1"}]}"#, r#"{"x": 1, "y": 2}"#] {
            assert_eq!(
                strict::<Body>(wrong).map_err(|e| e.to_string()),
                serde_json::from_str::<Body>(wrong).map_err(|e| e.to_string()),
                "{wrong}"
            );
        }
    }
}
