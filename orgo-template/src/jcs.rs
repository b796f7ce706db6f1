//! RFC 8785 (JCS) canonical JSON, written straight from `Serialize`.
//!
//! Only what canonical templates contain is supported: integers, strings,
//! booleans, null, sequences, maps with string keys, structs and enum
//! variants. Floats and bytes are an error (canonical templates hold none).
//! Each object's members are sorted by the UTF-16 code units of their names
//! when the object closes; strings escape only `"`, `\` and U+0000-U+001F
//! (`\b \t \n \f \r`, else `\u00xx`), everything else is written as UTF-8.
//!
//! String values are written as a document spells them (see
//! [`escape_document`]), so the output reads back to the same values.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::ops::Range;

use serde::Serialize;
use serde::ser::{self, Impossible};

/// Serializes `value` as canonical JSON.
pub(crate) fn to_string<T: Serialize + ?Sized>(value: &T) -> Result<String, Error> {
    let mut out = String::with_capacity(1024);
    value.serialize(Ser { out: &mut out })?;
    Ok(out)
}

/// Escapes the `${` that interpolation would read differently, as `$${`:
/// one before `var.` or `env.` (a reference) and one right after a `$`
/// (which would form the escape `$${`). A shell's `${HOME}` stays as written.
pub(crate) fn escape_document(text: &str) -> Cow<'_, str> {
    if !text.contains("${") {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 8);
    let mut start = 0;
    for (at, _) in text.match_indices("${") {
        let rest = &text[at + 2..];
        let reference = rest.starts_with("var.") || rest.starts_with("env.");
        let after_dollar = at > 0 && bytes[at - 1] == b'$';
        if reference || after_dollar {
            out.push_str(&text[start..at]);
            out.push('$');
            start = at;
        }
    }
    out.push_str(&text[start..]);
    Cow::Owned(out)
}

/// Writes `text` as a JSON string with RFC 8785 escaping.
fn write_string(text: &str, out: &mut String) {
    out.push('"');
    let mut start = 0;
    for (i, byte) in text.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            b'\t' => "\\t",
            b'\n' => "\\n",
            0x0c => "\\f",
            b'\r' => "\\r",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&text[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{byte:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&text[start..]);
    out.push('"');
}

/// Why a value cannot be written as canonical JSON.
#[derive(Debug)]
pub(crate) struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Error(message.to_string())
    }
}

fn unsupported<T>(what: &str) -> Result<T, Error> {
    Err(Error(format!("{what} has no canonical JSON form here")))
}

struct Ser<'a> {
    out: &'a mut String,
}

/// A sequence being written.
struct Seq<'a> {
    out: &'a mut String,
    first: bool,
}

/// An object being collected; members are sorted when it ends. Member values
/// are written one after another into `values`, each remembered by its range.
struct Object<'a> {
    out: &'a mut String,
    values: String,
    members: Vec<(Cow<'static, str>, Range<usize>)>,
    key: Option<String>,
    /// `Some(variant)` when this object is the body of `{"variant": {...}}`.
    variant: Option<&'static str>,
}

impl Object<'_> {
    fn member<T: Serialize + ?Sized>(
        &mut self,
        key: Cow<'static, str>,
        value: &T,
    ) -> Result<(), Error> {
        let start = self.values.len();
        value.serialize(Ser {
            out: &mut self.values,
        })?;
        self.members.push((key, start..self.values.len()));
        Ok(())
    }

    fn finish(mut self) {
        self.members
            .sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
        if let Some(variant) = self.variant {
            self.out.push('{');
            write_string(variant, self.out);
            self.out.push(':');
        }
        self.out.push('{');
        for (i, (key, range)) in self.members.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            write_string(key, self.out);
            self.out.push(':');
            self.out.push_str(&self.values[range.clone()]);
        }
        self.out.push('}');
        if self.variant.is_some() {
            self.out.push('}');
        }
    }
}

impl<'a> ser::Serializer for Ser<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Seq<'a>;
    type SerializeTuple = Seq<'a>;
    type SerializeTupleStruct = Seq<'a>;
    type SerializeTupleVariant = Impossible<(), Error>;
    type SerializeMap = Object<'a>;
    type SerializeStruct = Object<'a>;
    type SerializeStructVariant = Object<'a>;

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.out.push_str(if v { "true" } else { "false" });
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), Error> {
        self.serialize_i64(v.into())
    }
    fn serialize_i16(self, v: i16) -> Result<(), Error> {
        self.serialize_i64(v.into())
    }
    fn serialize_i32(self, v: i32) -> Result<(), Error> {
        self.serialize_i64(v.into())
    }
    fn serialize_i64(self, v: i64) -> Result<(), Error> {
        // Integers within 2^53 print the same in ECMAScript; canonical ones are far smaller.
        let _ = write!(self.out, "{v}");
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Result<(), Error> {
        self.serialize_u64(v.into())
    }
    fn serialize_u16(self, v: u16) -> Result<(), Error> {
        self.serialize_u64(v.into())
    }
    fn serialize_u32(self, v: u32) -> Result<(), Error> {
        self.serialize_u64(v.into())
    }
    fn serialize_u64(self, v: u64) -> Result<(), Error> {
        let _ = write!(self.out, "{v}");
        Ok(())
    }
    fn serialize_f32(self, _: f32) -> Result<(), Error> {
        unsupported("a float")
    }
    fn serialize_f64(self, _: f64) -> Result<(), Error> {
        unsupported("a float")
    }
    fn serialize_char(self, v: char) -> Result<(), Error> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_str(self, v: &str) -> Result<(), Error> {
        write_string(&escape_document(v), self.out);
        Ok(())
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<(), Error> {
        unsupported("a byte string")
    }
    fn serialize_none(self) -> Result<(), Error> {
        self.serialize_unit()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Error> {
        self.out.push_str("null");
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Error> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        write_string(variant, self.out);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.out.push('{');
        write_string(variant, self.out);
        self.out.push(':');
        value.serialize(Ser { out: self.out })?;
        self.out.push('}');
        Ok(())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Seq<'a>, Error> {
        self.out.push('[');
        Ok(Seq {
            out: self.out,
            first: true,
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<Seq<'a>, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<Seq<'a>, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        unsupported("a tuple variant")
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Object<'a>, Error> {
        Ok(Object {
            out: self.out,
            values: String::with_capacity(256),
            members: Vec::with_capacity(len.unwrap_or(8)),
            key: None,
            variant: None,
        })
    }
    fn serialize_struct(self, _: &'static str, len: usize) -> Result<Object<'a>, Error> {
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Object<'a>, Error> {
        let mut object = self.serialize_map(Some(len))?;
        object.variant = Some(variant);
        Ok(object)
    }
}

impl ser::SerializeSeq for Seq<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        value.serialize(Ser { out: self.out })
    }
    fn end(self) -> Result<(), Error> {
        self.out.push(']');
        Ok(())
    }
}

impl ser::SerializeTuple for Seq<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<(), Error> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleStruct for Seq<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<(), Error> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeMap for Object<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        match serde_json::to_value(key) {
            Ok(serde_json::Value::String(key)) => {
                self.key = Some(key);
                Ok(())
            }
            _ => unsupported("a map key that is not a string"),
        }
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let key = self
            .key
            .take()
            .ok_or_else(|| Error("a map value without a key".to_owned()))?;
        self.member(Cow::Owned(key), value)
    }
    fn end(self) -> Result<(), Error> {
        self.finish();
        Ok(())
    }
}

impl ser::SerializeStruct for Object<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.member(Cow::Borrowed(key), value)
    }
    fn end(self) -> Result<(), Error> {
        self.finish();
        Ok(())
    }
}

impl ser::SerializeStructVariant for Object<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.member(Cow::Borrowed(key), value)
    }
    fn end(self) -> Result<(), Error> {
        self.finish();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc8785_strings_and_member_order() {
        let value =
            json!({"b": 1, "a": [true, null, "x\"\\\n\u{1f}\u{7f}é€😀/"], "\u{e000}": 0, "😀": 0});
        // U+1F600 is the surrogate pair D83D DE00, which sorts before U+E000 in UTF-16.
        assert_eq!(
            to_string(&value).unwrap(),
            "{\"a\":[true,null,\"x\\\"\\\\\\n\\u001f\u{7f}é€😀/\"],\"b\":1,\"😀\":0,\"\u{e000}\":0}"
        );
        assert!(to_string(&json!(1.5)).is_err());
    }

    #[test]
    fn only_ambiguous_interpolation_markers_are_escaped() {
        for (text, written) in [
            ("echo ${HOME} $5 $", "echo ${HOME} $5 $"),
            ("${var.x} ${env.Y}", "$${var.x} $${env.Y}"),
            ("$${HOME}", "$$${HOME}"),
            ("$$${x}", "$$$${x}"),
            ("${${var.x}", "${$${var.x}"),
        ] {
            assert_eq!(escape_document(text), written, "{text}");
        }
    }

    #[test]
    fn enums_and_nested_structs() {
        #[derive(Serialize)]
        #[serde(rename_all = "snake_case")]
        enum Action {
            Run(String),
            Alert { message: String, level: u8 },
            Stop,
        }
        #[derive(Serialize)]
        struct Doc {
            z: Vec<Action>,
            a: Option<u32>,
        }
        let doc = Doc {
            z: vec![
                Action::Run("x".into()),
                Action::Alert {
                    message: "m".into(),
                    level: 2,
                },
                Action::Stop,
            ],
            a: None,
        };
        assert_eq!(
            to_string(&doc).unwrap(),
            r#"{"a":null,"z":[{"run":"x"},{"alert":{"level":2,"message":"m"}},"stop"]}"#
        );
    }
}
