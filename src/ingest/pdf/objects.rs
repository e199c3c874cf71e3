//! Small, panic-free accessors over lopdf's object model.

use lopdf::{Dictionary, Document, Object};

/// Largest stream the extractor will inflate (a defence against
/// decompression bombs; real content streams are far smaller).
pub const MAX_STREAM_BYTES: usize = 256 << 20;

/// Follows references (a bounded number of hops) to the object itself.
pub fn resolve<'a>(doc: &'a Document, obj: &'a Object) -> Option<&'a Object> {
    let mut cur = obj;
    for _ in 0..32 {
        match cur {
            Object::Reference(id) => cur = doc.objects.get(id)?,
            other => return Some(other),
        }
    }
    None
}

/// `dict[key]`, dereferenced.
pub fn dict_get<'a>(doc: &'a Document, dict: &'a Dictionary, key: &[u8]) -> Option<&'a Object> {
    dict.get(key).ok().and_then(|o| resolve(doc, o))
}

/// The bytes of a name object.
pub fn name_of(obj: &Object) -> Option<&[u8]> {
    match obj {
        Object::Name(n) => Some(n),
        _ => None,
    }
}

/// An integer or real as `f32`.
pub fn number(obj: &Object) -> Option<f32> {
    match obj {
        Object::Integer(i) => Some(*i as f32),
        Object::Real(r) if r.is_finite() => Some(*r),
        _ => None,
    }
}

/// The decoded data of a stream object (or reference to one).
pub fn stream_bytes(doc: &Document, obj: &Object) -> Option<Vec<u8>> {
    match resolve(doc, obj)? {
        Object::Stream(s) => {
            if s.dict.get(b"Filter").is_ok() {
                s.decompressed_content_with_limit(MAX_STREAM_BYTES).ok()
            } else {
                Some(s.content.clone())
            }
        }
        _ => None,
    }
}

/// A six-number matrix from an array object.
pub fn matrix(doc: &Document, obj: &Object) -> Option<[f32; 6]> {
    let arr = resolve(doc, obj)?.as_array().ok()?;
    if arr.len() != 6 {
        return None;
    }
    let mut m = [0f32; 6];
    for (slot, o) in m.iter_mut().zip(arr) {
        *slot = number(resolve(doc, o)?)?;
    }
    Some(m)
}
