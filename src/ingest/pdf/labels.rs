//! Printed page labels from the catalog's /PageLabels number tree.

use lopdf::{Dictionary, Document, Object};

use super::encoding::decode_text_string;
use super::objects::{dict_get, number, resolve};

/// Label of every page (`None` where the PDF defines none).
pub fn page_labels(doc: &Document, pages: usize) -> Vec<Option<String>> {
    let mut ranges: Vec<(usize, &Dictionary)> = Vec::new();
    let tree = doc
        .trailer
        .get(b"Root")
        .ok()
        .and_then(|o| resolve(doc, o))
        .and_then(|o| o.as_dict().ok())
        .and_then(|root| dict_get(doc, root, b"PageLabels"))
        .and_then(|o| o.as_dict().ok());
    if let Some(tree) = tree {
        collect(doc, tree, &mut ranges, 0);
    }
    if ranges.is_empty() {
        return vec![None; pages];
    }
    ranges.sort_by_key(|r| r.0);
    (0..pages)
        .map(|i| {
            let at = ranges.partition_point(|r| r.0 <= i);
            let (start, dict) = ranges.get(at.checked_sub(1)?)?;
            Some(label(doc, dict, i - start))
        })
        .collect()
}

fn collect<'a>(
    doc: &'a Document,
    node: &'a Dictionary,
    out: &mut Vec<(usize, &'a Dictionary)>,
    depth: usize,
) {
    if depth > 32 || out.len() > 100_000 {
        return;
    }
    if let Some(Object::Array(nums)) = dict_get(doc, node, b"Nums") {
        for pair in nums.chunks_exact(2) {
            let start = number(&pair[0]).unwrap_or(-1.0);
            if let Some(dict) = resolve(doc, &pair[1]).and_then(|o| o.as_dict().ok()) {
                if start >= 0.0 {
                    out.push((start as usize, dict));
                }
            }
        }
    }
    if let Some(Object::Array(kids)) = dict_get(doc, node, b"Kids") {
        for kid in kids {
            if let Some(kid) = resolve(doc, kid).and_then(|o| o.as_dict().ok()) {
                collect(doc, kid, out, depth + 1);
            }
        }
    }
}

fn label(doc: &Document, dict: &Dictionary, offset: usize) -> String {
    let prefix = match dict_get(doc, dict, b"P") {
        Some(Object::String(s, _)) => decode_text_string(s),
        _ => String::new(),
    };
    let start = dict_get(doc, dict, b"St")
        .and_then(number)
        .unwrap_or(1.0)
        .max(1.0) as usize;
    let n = start + offset;
    let body = match dict_get(doc, dict, b"S") {
        Some(Object::Name(s)) => match s.as_slice() {
            b"D" => n.to_string(),
            b"R" => roman(n).to_uppercase(),
            b"r" => roman(n),
            b"A" => letters(n).to_uppercase(),
            b"a" => letters(n),
            _ => String::new(),
        },
        _ => String::new(),
    };
    prefix + &body
}

pub(super) fn roman(mut n: usize) -> String {
    const TABLE: [(usize, &str); 13] = [
        (1000, "m"),
        (900, "cm"),
        (500, "d"),
        (400, "cd"),
        (100, "c"),
        (90, "xc"),
        (50, "l"),
        (40, "xl"),
        (10, "x"),
        (9, "ix"),
        (5, "v"),
        (4, "iv"),
        (1, "i"),
    ];
    if n == 0 || n > 100_000 {
        return n.to_string();
    }
    let mut out = String::new();
    for (v, s) in TABLE {
        while n >= v {
            out.push_str(s);
            n -= v;
        }
    }
    out
}

/// a..z, then aa..zz, as PDF defines letter labels.
fn letters(n: usize) -> String {
    if n == 0 || n > 26 * 1000 {
        return n.to_string();
    }
    let c = (b'a' + ((n - 1) % 26) as u8) as char;
    c.to_string().repeat((n - 1) / 26 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lopdf::dictionary;

    #[test]
    fn numbering_styles() {
        assert_eq!(roman(4), "iv");
        assert_eq!(roman(1994), "mcmxciv");
        assert_eq!(letters(1), "a");
        assert_eq!(letters(28), "bb");
    }

    #[test]
    fn labels_from_number_tree() {
        let mut doc = Document::with_version("1.5");
        let labels = dictionary! {
            "Nums" => vec![
                0.into(), dictionary! { "S" => "r" }.into(),
                2.into(), dictionary! { "S" => "D", "St" => 1 }.into(),
                4.into(), dictionary! { "P" => Object::string_literal("A-"), "S" => "D", "St" => 7 }.into(),
            ],
        };
        let root = doc.add_object(dictionary! { "Type" => "Catalog", "PageLabels" => labels });
        doc.trailer.set("Root", root);
        let got = page_labels(&doc, 6);
        let got: Vec<_> = got.iter().map(|l| l.as_deref().unwrap_or("-")).collect();
        assert_eq!(got, ["i", "ii", "1", "2", "A-7", "A-8"]);
    }
}
