//! Generates the sample corpus of `corpora/sample/` and the bad-input files
//! the tests use, with lopdf, so tests can rebuild everything they read.
//!
//! The corpus is small but exercises what real archives contain: page labels
//! (roman front matter), a /Differences encoding with ligature glyphs, a
//! hyphenated line end, a two-column paper typeset TeX-style (no space
//! characters, word gaps from TJ adjustments, a kern inside a word),
//! Japanese in a CID-keyed Type0 font with a ToUnicode CMap, Chinese through
//! the predefined UniGB-UCS2-H CMap, a damaged file, Markdown and plain text.
//! Output is deterministic.

pub mod scan;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use lopdf::content::{Content, Operation};
use lopdf::{dictionary, Dictionary, Document, Object, ObjectId, Stream, StringFormat};

use crate::ingest::pdf::std_metrics::widths_for;

fn other<E: std::fmt::Display>(e: E) -> io::Error {
    io::Error::other(e.to_string())
}

/// A font of a page builder: its resource name and how to measure and encode text.
#[derive(Clone, Copy)]
enum FontKind {
    /// A simple font with WinAnsi + our Differences (0x81 = fi, 0x82 = fl).
    Latin { helvetica: bool },
    /// Type0, Identity-H, codes from [`Pdf::cid_codes`].
    Cid,
    /// Type0, UniGB-UCS2-H: codes are UTF-16BE.
    Ucs2,
}

struct Pdf {
    doc: Document,
    pages_id: ObjectId,
    kids: Vec<Object>,
    fonts: Dictionary,
    kinds: BTreeMap<String, FontKind>,
    /// Character -> 2-byte code for the CID font.
    cid_codes: BTreeMap<char, u16>,
}

/// One page's content being laid out.
struct Page {
    ops: Vec<Operation>,
}

fn latin_width(helvetica: bool, c: char) -> f32 {
    let table = widths_for(if helvetica {
        "Helvetica"
    } else {
        "Times-Roman"
    })
    .expect("standard font");
    match c {
        '\u{fb01}' | '\u{fb02}' => 556.0,
        c if (c as u32) < 256 => table(c as u8),
        _ => 500.0,
    }
}

/// Encodes Latin text for our simple fonts: "fi"/"fl" become ligature codes
/// when `ligatures` is set, other characters their Latin-1 byte.
fn latin_bytes(text: &str, ligatures: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if ligatures
            && chars[i] == 'f'
            && i + 1 < chars.len()
            && (chars[i + 1] == 'i' || chars[i + 1] == 'l')
        {
            out.push(if chars[i + 1] == 'i' { 0x81 } else { 0x82 });
            i += 2;
            continue;
        }
        let c = chars[i];
        out.push(match c {
            '’' => 0x92,
            '–' => 0x96,
            '—' => 0x97,
            c if (c as u32) < 256 => c as u8,
            _ => b'?',
        });
        i += 1;
    }
    out
}

impl Pdf {
    fn new() -> Pdf {
        let mut doc = Document::with_version("1.5");
        let pages_id = doc.new_object_id();
        Pdf {
            doc,
            pages_id,
            kids: Vec::new(),
            fonts: Dictionary::new(),
            kinds: BTreeMap::new(),
            cid_codes: BTreeMap::new(),
        }
    }

    fn latin_font(&mut self, name: &str, base: &str) {
        let helvetica = base.starts_with("Helvetica");
        let widths: Vec<Object> = (32u16..=255)
            .map(|c| {
                let w = match c {
                    0x81 | 0x82 => 556.0,
                    _ => latin_width(helvetica, char::from(c as u8)),
                };
                Object::Integer(w as i64)
            })
            .collect();
        let font = self.doc.add_object(dictionary! {
            "Type" => "Font",
            "Subtype" => "Type1",
            "BaseFont" => base,
            "FirstChar" => 32,
            "LastChar" => 255,
            "Widths" => widths,
            "Encoding" => dictionary! {
                "Type" => "Encoding",
                "BaseEncoding" => "WinAnsiEncoding",
                "Differences" => vec![0x81.into(), "fi".into(), "fl".into()],
            },
        });
        self.fonts.set(name, font);
        self.kinds
            .insert(name.into(), FontKind::Latin { helvetica });
    }

    /// A Japanese Type0 font (Identity-H) covering `text`'s characters.
    fn cid_font(&mut self, name: &str, text: &str) {
        for c in text.chars() {
            let next = self.cid_codes.len() as u16 + 1;
            self.cid_codes.entry(c).or_insert(next);
        }
        let mut cmap = String::from(
            "/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n/CMapName /Adobe-Identity-UCS def\n/CMapType 2 def\n1 begincodespacerange\n<0000> <FFFF>\nendcodespacerange\n",
        );
        let entries: Vec<(&char, &u16)> = self.cid_codes.iter().collect();
        for block in entries.chunks(100) {
            cmap.push_str(&format!("{} beginbfchar\n", block.len()));
            for (c, code) in block {
                let mut units = [0u16; 2];
                let hex: String = c
                    .encode_utf16(&mut units)
                    .iter()
                    .map(|u| format!("{u:04X}"))
                    .collect();
                cmap.push_str(&format!("<{code:04X}> <{hex}>\n"));
            }
            cmap.push_str("endbfchar\n");
        }
        cmap.push_str("endcmap\nCMapName currentdict /CMap defineresource pop\nend\nend\n");
        let to_unicode = self
            .doc
            .add_object(Stream::new(dictionary! {}, cmap.into_bytes()));
        // Half-width glyphs for ASCII, full width for the rest.
        let mut w = Vec::new();
        for (c, code) in &self.cid_codes {
            if c.is_ascii() {
                w.push(Object::Integer(i64::from(*code)));
                w.push(Object::Array(vec![Object::Integer(500)]));
            }
        }
        let descendant = dictionary! {
            "Type" => "Font",
            "Subtype" => "CIDFontType0",
            "BaseFont" => "HeiseiKakuGo-W5",
            "CIDSystemInfo" => dictionary! {
                "Registry" => Object::string_literal("Adobe"),
                "Ordering" => Object::string_literal("Japan1"),
                "Supplement" => 6,
            },
            "FontDescriptor" => dictionary! {
                "Type" => "FontDescriptor", "FontName" => "HeiseiKakuGo-W5", "Flags" => 4,
                "FontBBox" => vec![0.into(), (-120).into(), 1000.into(), 880.into()],
                "ItalicAngle" => 0, "Ascent" => 880, "Descent" => -120, "CapHeight" => 700, "StemV" => 80,
            },
            "DW" => 1000,
            "W" => w,
        };
        let font = self.doc.add_object(dictionary! {
            "Type" => "Font",
            "Subtype" => "Type0",
            "BaseFont" => "HeiseiKakuGo-W5",
            "Encoding" => "Identity-H",
            "DescendantFonts" => vec![descendant.into()],
            "ToUnicode" => to_unicode,
        });
        self.fonts.set(name, font);
        self.kinds.insert(name.into(), FontKind::Cid);
    }

    /// A Chinese Type0 font with the predefined UniGB-UCS2-H CMap and no ToUnicode.
    fn ucs2_font(&mut self, name: &str) {
        let font = self.doc.add_object(dictionary! {
            "Type" => "Font",
            "Subtype" => "Type0",
            "BaseFont" => "STSong-Light",
            "Encoding" => "UniGB-UCS2-H",
            "DescendantFonts" => vec![dictionary! {
                "Type" => "Font",
                "Subtype" => "CIDFontType0",
                "BaseFont" => "STSong-Light",
                "CIDSystemInfo" => dictionary! {
                    "Registry" => Object::string_literal("Adobe"),
                    "Ordering" => Object::string_literal("GB1"),
                    "Supplement" => 5,
                },
                "DW" => 1000,
            }.into()],
        });
        self.fonts.set(name, font);
        self.kinds.insert(name.into(), FontKind::Ucs2);
    }

    fn encode(&self, font: &str, text: &str) -> Vec<u8> {
        match self.kinds[font] {
            FontKind::Latin { .. } => latin_bytes(text, true),
            FontKind::Cid => text
                .chars()
                .flat_map(|c| self.cid_codes.get(&c).copied().unwrap_or(0).to_be_bytes())
                .collect(),
            FontKind::Ucs2 => text.encode_utf16().flat_map(u16::to_be_bytes).collect(),
        }
    }

    fn width(&self, font: &str, text: &str, size: f32) -> f32 {
        let em: f32 = match self.kinds[font] {
            FontKind::Latin { helvetica } => {
                let bytes = latin_bytes(text, true);
                bytes
                    .iter()
                    .map(|&b| {
                        if (0x81..=0x82).contains(&b) {
                            556.0
                        } else {
                            latin_width(helvetica, char::from(b))
                        }
                    })
                    .sum()
            }
            FontKind::Cid | FontKind::Ucs2 => text
                .chars()
                .map(|c| if c.is_ascii() { 500.0 } else { 1000.0 })
                .sum(),
        };
        em * size / 1000.0
    }

    fn add_page(&mut self, page: Page) -> io::Result<()> {
        let content = Content {
            operations: page.ops,
        }
        .encode()
        .map_err(other)?;
        let mut stream = Stream::new(dictionary! {}, content);
        stream.compress().map_err(other)?;
        let content_id = self.doc.add_object(stream);
        let page_id = self.doc.add_object(dictionary! {
            "Type" => "Page",
            "Parent" => self.pages_id,
            "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
            "Contents" => content_id,
        });
        self.kids.push(page_id.into());
        Ok(())
    }

    fn finish(
        mut self,
        info: Option<Dictionary>,
        labels: Option<Dictionary>,
    ) -> io::Result<Vec<u8>> {
        let resources = self
            .doc
            .add_object(dictionary! { "Font" => self.fonts.clone() });
        let count = self.kids.len() as i64;
        self.doc.objects.insert(
            self.pages_id,
            Object::Dictionary(dictionary! {
                "Type" => "Pages",
                "Kids" => self.kids.clone(),
                "Count" => count,
                "Resources" => resources,
            }),
        );
        let mut catalog = dictionary! { "Type" => "Catalog", "Pages" => self.pages_id };
        if let Some(labels) = labels {
            catalog.set("PageLabels", labels);
        }
        let catalog_id = self.doc.add_object(catalog);
        self.doc.trailer.set("Root", catalog_id);
        if let Some(info) = info {
            let info_id = self.doc.add_object(info);
            self.doc.trailer.set("Info", info_id);
        }
        let mut out = Vec::new();
        self.doc.save_to(&mut out).map_err(other)?;
        Ok(out)
    }
}

impl Page {
    fn new() -> Page {
        Page { ops: Vec::new() }
    }

    fn show(&mut self, pdf: &Pdf, font: &str, size: f32, x: f32, y: f32, text: &str) {
        self.ops.push(Operation::new("BT", vec![]));
        self.ops
            .push(Operation::new("Tf", vec![font.into(), size.into()]));
        self.ops
            .push(Operation::new("Td", vec![x.into(), y.into()]));
        self.ops.push(Operation::new(
            "Tj",
            vec![Object::String(
                pdf.encode(font, text),
                StringFormat::Hexadecimal,
            )],
        ));
        self.ops.push(Operation::new("ET", vec![]));
    }

    /// A TeX-style line: words as separate strings, gaps as TJ adjustments.
    fn show_tj(
        &mut self,
        pdf: &Pdf,
        font: &str,
        size: f32,
        at: (f32, f32),
        words: &[&str],
        gap: f32,
    ) {
        let mut items = Vec::new();
        for (i, w) in words.iter().enumerate() {
            if i > 0 {
                items.push(Object::Real(-gap));
            }
            // A positive kern inside one word, which must not split it.
            if let Some(rest) = w.strip_prefix('W') {
                items.push(Object::String(
                    latin_bytes("W", false),
                    StringFormat::Literal,
                ));
                items.push(Object::Real(80.0));
                items.push(Object::String(
                    latin_bytes(rest, false),
                    StringFormat::Literal,
                ));
            } else {
                items.push(Object::String(pdf.encode(font, w), StringFormat::Literal));
            }
        }
        self.ops.push(Operation::new("BT", vec![]));
        self.ops
            .push(Operation::new("Tf", vec![font.into(), size.into()]));
        self.ops.push(Operation::new(
            "Tm",
            vec![
                1.into(),
                0.into(),
                0.into(),
                1.into(),
                at.0.into(),
                at.1.into(),
            ],
        ));
        self.ops
            .push(Operation::new("TJ", vec![Object::Array(items)]));
        self.ops.push(Operation::new("ET", vec![]));
    }

    /// Wraps `text` into lines no wider than `width`; returns the y after it.
    #[allow(clippy::too_many_arguments)]
    fn paragraph(
        &mut self,
        pdf: &Pdf,
        font: &str,
        size: f32,
        x: f32,
        mut y: f32,
        width: f32,
        text: &str,
    ) -> f32 {
        for line in wrap(pdf, font, size, width, text) {
            self.show(pdf, font, size, x, y, &line);
            y -= size * 1.3;
        }
        y - size * 0.6
    }
}

fn wrap(pdf: &Pdf, font: &str, size: f32, width: f32, text: &str) -> Vec<String> {
    let cjk = matches!(pdf.kinds[font], FontKind::Cid | FontKind::Ucs2);
    let mut lines = Vec::new();
    let mut line = String::new();
    if cjk {
        for c in text.chars() {
            let mut next = line.clone();
            next.push(c);
            if pdf.width(font, &next, size) > width && !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            line.push(c);
        }
    } else {
        for word in text.split_whitespace() {
            let next = if line.is_empty() {
                word.to_string()
            } else {
                format!("{line} {word}")
            };
            if pdf.width(font, &next, size) > width && !line.is_empty() {
                lines.push(std::mem::replace(&mut line, word.to_string()));
            } else {
                line = next;
            }
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

fn info(title: &str, author: &str) -> Dictionary {
    dictionary! {
        "Title" => Object::string_literal(title),
        "Author" => Object::string_literal(author),
        "Producer" => Object::string_literal("shirabe sample generator"),
        "CreationDate" => Object::string_literal("D:20251014093000+09'00'"),
        "ModDate" => Object::string_literal("D:20251020170000+09'00'"),
    }
}

fn utf16_info(title: &str, author: &str) -> Dictionary {
    let enc = |s: &str| {
        let mut b = vec![0xfe, 0xff];
        b.extend(s.encode_utf16().flat_map(u16::to_be_bytes));
        Object::String(b, StringFormat::Hexadecimal)
    };
    dictionary! {
        "Title" => enc(title),
        "Author" => enc(author),
        "CreationDate" => Object::string_literal("D:20251014140000+09'00'"),
    }
}

const MARGIN: f32 = 72.0;
const TOP: f32 = 770.0;
const BODY: f32 = 451.0;

fn quarterly_report() -> io::Result<Vec<u8>> {
    let mut pdf = Pdf::new();
    pdf.latin_font("F1", "Helvetica");
    pdf.latin_font("F2", "Helvetica-Bold");
    let sections: [(&str, &[&str]); 4] = [
        ("Northwind Quarterly Report Q3 2025", &[
            "Prepared by the Finance Office for the board of directors.",
            "This report summarises revenue, operating costs and the outlook for the fourth quarter. Figures are unaudited and given in euros.",
        ]),
        ("1. Revenue", &[
            "Revenue grew 12 percent to 4.2 million euros in the third quarter, driven by the new logistics contracts in the Kansai region.",
            "Gross profit rose to 1.3 million euros. The profit margin improved because fewer shipments were rerouted.",
            "Recurring service fees now account for a third of revenue, up from a quarter a year ago.",
        ]),
        ("2. Operating costs", &[
            "Operating costs fell by 3 percent. The Osaka warehouse completed its move to an efficient automated picking workflow in August.",
            "Energy prices remained the largest risk; the fleet of delivery vans consumed 8 percent less fuel after route planning was changed.",
        ]),
        ("3. Outlook", &[
            "For the fourth quarter we expect revenue between 4.3 and 4.6 million euros.",
            "The board will decide on the second phase of the Osaka warehouse expansion in November.",
        ]),
    ];
    for (i, (heading, paras)) in sections.iter().enumerate() {
        let mut page = Page::new();
        let size = if i == 0 { 20.0 } else { 15.0 };
        page.show(&pdf, "F2", size, MARGIN, TOP, heading);
        let mut y = TOP - size * 2.2;
        for p in paras.iter() {
            y = page.paragraph(&pdf, "F1", 11.0, MARGIN, y, BODY, p);
        }
        if i == 1 {
            // A hyphenated line end, as a typesetter would break it.
            page.show(&pdf, "F1", 11.0, MARGIN, y, "Investment in new infra-");
            page.show(
                &pdf,
                "F1",
                11.0,
                MARGIN,
                y - 14.3,
                "structure for cold storage continued as planned.",
            );
        }
        // Footer with the printed page number.
        let label = if i == 0 {
            "i".to_string()
        } else {
            i.to_string()
        };
        page.show(&pdf, "F1", 9.0, 290.0, 40.0, &label);
        // A running footer, which passages leave out.
        page.show(
            &pdf,
            "F1",
            8.0,
            MARGIN,
            26.0,
            "Northwind Logistics - internal use only",
        );
        pdf.add_page(page)?;
    }
    let labels = dictionary! {
        "Nums" => vec![
            0.into(), dictionary! { "S" => "r" }.into(),
            1.into(), dictionary! { "S" => "D", "St" => 1 }.into(),
        ],
    };
    pdf.finish(
        Some(info("Northwind Quarterly Report Q3 2025", "Finance Office")),
        Some(labels),
    )
}

fn meeting_minutes() -> io::Result<Vec<u8>> {
    let mut pdf = Pdf::new();
    pdf.latin_font("F1", "Helvetica");
    pdf.latin_font("F2", "Helvetica-Bold");
    let pages: [&[(&str, &str)]; 2] = [
        &[
            ("F2", "Minutes of the Board Meeting, 14 October 2025"),
            ("F1", "Attendees: Kenji Sato (chair), Maria Lopez, Aiko Tanaka, David Chen. Apologies: none."),
            ("F2", "Decisions"),
            ("F1", "The board approved the budget of 1.8 million euros for the Osaka warehouse expansion, phase one."),
            ("F1", "The board approved the hiring of two data engineers for the analytics team."),
            ("F2", "Action items"),
            ("F1", "Kenji Sato will prepare the tender documents for the warehouse by 30 November 2025."),
            ("F1", "Maria Lopez will present the revised energy contract at the next meeting."),
        ],
        &[
            ("F2", "Open questions"),
            ("F1", "Whether the second phase should include cold storage remains open; Aiko Tanaka will collect supplier quotes."),
            ("F1", "The audit committee asked how the new revenue recognition rules affect service fees."),
            ("F2", "Next meeting"),
            ("F1", "The next board meeting is scheduled for 11 November 2025 in the Tokyo office."),
        ],
    ];
    for items in pages {
        let mut page = Page::new();
        let mut y = TOP;
        for (font, text) in items {
            let size = if *font == "F2" { 13.0 } else { 11.0 };
            y = page.paragraph(&pdf, font, size, MARGIN, y, BODY, text);
        }
        pdf.add_page(page)?;
    }
    pdf.finish(
        Some(info(
            "Board Meeting Minutes, October 2025",
            "Company Secretary",
        )),
        None,
    )
}

fn two_column_paper() -> io::Result<Vec<u8>> {
    let mut pdf = Pdf::new();
    pdf.latin_font("F1", "Times-Roman");
    pdf.latin_font("F2", "Times-Bold");
    let left = "Lexical retrieval ranks passages by the terms they share with the query. BM25 weighs each term by its rarity and saturates repeated matches, which makes lexical retrieval robust for names, numbers and rare technical words. Its weakness is vocabulary mismatch: a paraphrase with different words is missed entirely. Word boundaries matter for lexical retrieval in languages written without spaces, where bigrams or a dictionary must segment the text.";
    let right = "Dense retrieval embeds queries and passages into one vector space and ranks by cosine similarity. Dense retrieval finds paraphrases and translations that share no words with the query, but it can miss exact identifiers and is costly to compute on a CPU. Hybrid systems fuse both rankings, for example by reciprocal rank fusion, and often beat either method alone on question answering benchmarks.";
    let col_w = 215.0;
    let gutter = 20.0;
    let size = 10.0;
    let gap = 333.0;
    for page_no in 0..2 {
        let mut page = Page::new();
        let mut top = TOP;
        if page_no == 0 {
            let title = "Hybrid Retrieval for Archive Question Answering";
            let tw = pdf.width("F2", title, 16.0);
            page.show(&pdf, "F2", 16.0, (595.0 - tw) / 2.0, top, title);
            let authors = "Hanako Yamada and Peter Novak";
            let aw = pdf.width("F1", authors, 11.0);
            page.show(&pdf, "F1", 11.0, (595.0 - aw) / 2.0, top - 22.0, authors);
            let abs = "Abstract. We compare lexical and dense retrieval on archives of meeting minutes and reports, and show that fusing them improves recall of the cited page.";
            let mut y = top - 50.0;
            for line in wrap(&pdf, "F1", size, 2.0 * col_w + gutter, abs) {
                let words: Vec<&str> = line.split(' ').collect();
                page.show_tj(&pdf, "F1", size, (MARGIN, y), &words, gap);
                y -= size * 1.25;
            }
            top = y - 14.0;
        }
        let heading = if page_no == 0 {
            ("1 Lexical retrieval", "2 Dense retrieval")
        } else {
            ("3 Word matching", "4 Vector search")
        };
        for (col, (head, body)) in [(heading.0, left), (heading.1, right)]
            .into_iter()
            .enumerate()
        {
            let x = MARGIN + col as f32 * (col_w + gutter);
            let words: Vec<&str> = head.split(' ').collect();
            page.show_tj(&pdf, "F2", 11.0, (x, top), &words, gap);
            let mut y = top - 18.0;
            let mut body = body.to_string();
            if col == 0 && page_no == 0 {
                body.push_str(" Word order also matters to users.");
            }
            for line in wrap(&pdf, "F1", size, col_w, &body) {
                let words: Vec<&str> = line.split(' ').collect();
                page.show_tj(&pdf, "F1", size, (x, y), &words, gap);
                y -= size * 1.25;
            }
        }
        pdf.add_page(page)?;
    }
    pdf.finish(
        Some(info(
            "Hybrid Retrieval for Archive Question Answering",
            "Hanako Yamada; Peter Novak",
        )),
        None,
    )
}

const JA_PAGES: [&[&str]; 2] = [
    &[
        "第3回 企画会議 議事録",
        "日時：2025年10月14日 14時から16時",
        "場所：大阪本社 第2会議室",
        "出席者：佐藤、田中、鈴木、高橋",
        "決定事項",
        "1. 大阪倉庫の拡張計画を承認した。第一期の予算は1.8億円とする。",
        "2. 来年度の予算案は次回の会議で最終決定する。各部門は十月末までに要望をまとめること。",
        "3. 新しい物流システムの導入は、試験運用の結果を見てから判断する。",
    ],
    &[
        "次回の予定",
        "次回の会議は11月11日に東京本社で開催する。",
        "担当者は期限までに報告書を提出すること。佐藤は入札資料を準備する。",
        "以上",
    ],
];

fn japanese_minutes() -> io::Result<Vec<u8>> {
    let mut pdf = Pdf::new();
    let all: String = JA_PAGES.iter().flat_map(|p| p.iter()).copied().collect();
    pdf.cid_font("F1", &all);
    for lines in JA_PAGES {
        let mut page = Page::new();
        let mut y = TOP;
        for (i, line) in lines.iter().enumerate() {
            let size = if i == 0 { 16.0 } else { 11.0 };
            y = page.paragraph(&pdf, "F1", size, MARGIN, y, BODY, line);
        }
        pdf.add_page(page)?;
    }
    pdf.finish(Some(utf16_info("第3回 企画会議 議事録", "企画部")), None)
}

fn chinese_notice() -> io::Result<Vec<u8>> {
    let mut pdf = Pdf::new();
    pdf.ucs2_font("F1");
    let lines = [
        "关于年度报告的通知",
        "各部门：",
        "本公司年度报告已经完成。今年销售额增长了百分之十二，主要得益于新市场的开拓和产品质量的提高。",
        "请各部门在十二月十五日之前提交意见。大阪仓库的扩建计划将在下次会议上讨论。",
        "总务部",
    ];
    let mut page = Page::new();
    let mut y = TOP;
    for (i, line) in lines.iter().enumerate() {
        let size = if i == 0 { 16.0 } else { 11.0 };
        y = page.paragraph(&pdf, "F1", size, MARGIN, y, BODY, line);
    }
    pdf.add_page(page)?;
    pdf.finish(Some(utf16_info("关于年度报告的通知", "总务部")), None)
}

const NOTES_MD: &str = "# Research notes: warehouse automation

These notes follow up on the quarterly report and the October board meeting.

## Osaka warehouse

The Osaka warehouse moved to automated picking in August. Throughput rose, and
the night shift was reduced. Open issue: cold storage for phase two.

## Questions for the supplier

- What is the maintenance contract for the picking robots?
- Can the conveyor be extended without stopping operations?

## Related documents

See the board minutes of 14 October 2025 (budget approved) and the Japanese
planning-meeting minutes (企画会議), which record the same decision.
";

const GLOSSARY_TXT: &str = "Glossary of terms used in the archive

BM25: a ranking function for lexical search that weighs rare terms higher.

Embedding: a vector that represents the meaning of a text; similar texts have
nearby vectors.

議事録 (gijiroku): meeting minutes. 決定事項 (kettei jikou): decisions taken.

Reciprocal rank fusion: a way to merge ranked lists by summing 1/(k + rank).
";

/// Writes the sample corpus into `dir` and returns the files written.
pub fn write_sample_corpus(dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut damaged = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n2 0 obj\n<< /Type /Pages /Kids [3 0 R] /Count 1 >>\nendobj\n3 0 obj\n<< /Type /Page /Parent 2 0 R /Contents 4 0 R >>\nendobj\n4 0 obj\n<< /Length 9999 /Filter /FlateDecode >>\nstream\n".to_vec();
    damaged.extend((0..200u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("quarterly-report.pdf", quarterly_report()?),
        ("meeting-minutes.pdf", meeting_minutes()?),
        ("two-column-paper.pdf", two_column_paper()?),
        ("japanese-minutes.pdf", japanese_minutes()?),
        ("chinese-notice.pdf", chinese_notice()?),
        ("damaged.pdf", damaged),
        ("notes.md", NOTES_MD.as_bytes().to_vec()),
        ("glossary.txt", GLOSSARY_TXT.as_bytes().to_vec()),
    ];
    let mut out = Vec::new();
    for (name, bytes) in files {
        let path = dir.join(name);
        std::fs::write(&path, bytes)?;
        out.push(path);
    }
    Ok(out)
}

/// A plain English PDF of `pages` pages; page N says "Page N of the long
/// manual" and contains the word `keywordN`.
pub fn long_pdf(pages: usize) -> Vec<u8> {
    let mut pdf = Pdf::new();
    pdf.latin_font("F1", "Helvetica");
    for n in 1..=pages {
        let mut page = Page::new();
        page.show(
            &pdf,
            "F1",
            14.0,
            MARGIN,
            TOP,
            &format!("Page {n} of the long manual"),
        );
        let text = format!(
            "This page describes step {n} of the procedure. The unique marker on this page is keyword{n}, which a search should find on page {n} only. Operators should read the previous step first."
        );
        page.paragraph(&pdf, "F1", 11.0, MARGIN, TOP - 30.0, BODY, &text);
        // Pages are tiny, so the fallible parts cannot fail here.
        if pdf.add_page(page).is_err() {
            break;
        }
    }
    pdf.finish(None, None).unwrap_or_default()
}

fn encrypted(user: &str, text: &str) -> io::Result<Vec<u8>> {
    let mut pdf = Pdf::new();
    pdf.latin_font("F1", "Helvetica");
    let mut page = Page::new();
    page.paragraph(&pdf, "F1", 12.0, MARGIN, TOP, BODY, text);
    pdf.add_page(page)?;
    let bytes = pdf.finish(Some(info("Encrypted sample", "shirabe")), None)?;
    let mut doc = Document::load_mem(&bytes).map_err(other)?;
    doc.trailer.set(
        "ID",
        vec![
            Object::String(b"shirabe-sample-id-1".to_vec(), StringFormat::Hexadecimal),
            Object::String(b"shirabe-sample-id-1".to_vec(), StringFormat::Hexadecimal),
        ],
    );
    let version = lopdf::encryption::EncryptionVersion::V2 {
        document: &doc,
        owner_password: "owner-secret",
        user_password: user,
        key_length: 128,
        permissions: lopdf::encryption::Permissions::all(),
    };
    let state = lopdf::encryption::EncryptionState::try_from(version).map_err(other)?;
    doc.encrypt(&state).map_err(other)?;
    let mut out = Vec::new();
    doc.save_to(&mut out).map_err(other)?;
    Ok(out)
}

/// A page tree whose Pages node lists itself as a kid, and a page whose form
/// XObject draws itself.
fn cyclic() -> io::Result<Vec<u8>> {
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font = doc.add_object(
        dictionary! { "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica" },
    );
    let form_id = doc.new_object_id();
    let form = Stream::new(
        dictionary! {
            "Type" => "XObject", "Subtype" => "Form",
            "BBox" => vec![0.into(), 0.into(), 100.into(), 100.into()],
            "Resources" => dictionary! { "XObject" => dictionary! { "X1" => form_id }, "Font" => dictionary! { "F1" => font } },
        },
        b"BT /F1 12 Tf 72 700 Td (cycle text) Tj ET /X1 Do".to_vec(),
    );
    doc.objects.insert(form_id, Object::Stream(form));
    let content = doc.add_object(Stream::new(dictionary! {}, b"/X1 Do".to_vec()));
    let page = doc.add_object(dictionary! {
        "Type" => "Page", "Parent" => pages_id, "Contents" => content,
        "Resources" => dictionary! { "XObject" => dictionary! { "X1" => form_id } },
        "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
    });
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! { "Type" => "Pages", "Kids" => vec![page.into(), pages_id.into()], "Count" => 2 }),
    );
    let catalog = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog);
    let mut out = Vec::new();
    doc.save_to(&mut out).map_err(other)?;
    Ok(out)
}

/// Two readable pages whose page tree lies about its size: the second page
/// hangs under a `/Pages` node that claims 10^14 pages (a reader that
/// reserves room by `/Count` asks for petabytes and aborts).
pub fn page_count_bomb() -> io::Result<Vec<u8>> {
    let (mut doc, pages) = two_pages(
        "The count bomb's first page reads fine.",
        "Its second page survives the lying count.",
    )?;
    let root = doc.new_object_id();
    let liar = doc.new_object_id();
    doc.objects.insert(
        liar,
        Object::Dictionary(dictionary! { "Type" => "Pages", "Parent" => root, "Kids" => vec![pages[1].into()], "Count" => 100_000_000_000_000i64 }),
    );
    doc.objects.insert(
        root,
        Object::Dictionary(dictionary! { "Type" => "Pages", "Kids" => vec![pages[0].into(), liar.into()], "Count" => 2 }),
    );
    finish_tree(doc, root, &pages)
}

/// Two readable pages, and an object stream (appended as an incremental
/// update) holding one array of `numbers` zeros that nothing references:
/// a few hundred kilobytes compressed, a parser that builds every number
/// as an object needs gigabytes.
pub fn objstm_array_bomb(numbers: usize) -> io::Result<Vec<u8>> {
    use std::io::Write as _;
    let (doc, _) = two_pages(
        "The object stream bomb's first page reads fine.",
        "Its second page is text like any other.",
    )?;
    let root = doc
        .trailer
        .get(b"Root")
        .and_then(Object::as_reference)
        .map_err(other)?;
    let mut out = Vec::new();
    let mut doc = doc;
    doc.save_to(&mut out).map_err(other)?;
    let tail = String::from_utf8_lossy(&out[out.len().saturating_sub(64)..]).into_owned();
    let prev: u64 = tail
        .split("startxref")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| other("no startxref"))?;
    let id = doc.max_id + 1;
    let head = format!("{} 0 ", id + 1);
    let mut plain = Vec::with_capacity(head.len() + 2 * numbers + 2);
    plain.extend_from_slice(head.as_bytes());
    plain.push(b'[');
    for _ in 0..numbers {
        plain.extend_from_slice(b"0 ");
    }
    plain.push(b']');
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&plain)?;
    let data = z.finish()?;
    let offset = out.len() + 1;
    out.extend_from_slice(
        format!(
            "\n{id} 0 obj\n<< /Type /ObjStm /N 1 /First {} /Filter /FlateDecode /Length {} >>\nstream\n",
            head.len(),
            data.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\nendstream\nendobj\n");
    let xref = out.len();
    out.extend_from_slice(
        format!(
            "xref\n0 1\n0000000000 65535 f \n{id} 1\n{offset:010} 00000 n \ntrailer\n<< /Size {} /Root {} {} R /Prev {prev} >>\nstartxref\n{xref}\n%%EOF\n",
            id + 2,
            root.0,
            root.1
        )
        .as_bytes(),
    );
    Ok(out)
}

/// A page tree of 40 levels where every node lists the next one twice
/// (2^40 paths to one page, each level's `/Count` doubling): walked as a
/// tree it never ends; as a graph it has one page under the first.
pub fn page_dag() -> io::Result<Vec<u8>> {
    let (mut doc, pages) = two_pages(
        "The page DAG's first page reads fine.",
        "The doubling page DAG ends in this page.",
    )?;
    let mut below = pages[1];
    let mut count = 1i64;
    for _ in 0..40 {
        let node = doc.new_object_id();
        count *= 2;
        doc.objects.insert(
            node,
            Object::Dictionary(dictionary! { "Type" => "Pages", "Kids" => vec![below.into(), below.into()], "Count" => count }),
        );
        below = node;
    }
    let root = doc.new_object_id();
    doc.objects.insert(
        root,
        Object::Dictionary(dictionary! { "Type" => "Pages", "Kids" => vec![pages[0].into(), below.into()], "Count" => count + 1 }),
    );
    finish_tree(doc, root, &pages)
}

/// A page tree read from arbitrary bytes, over two real pages (the page
/// tree fuzz target and its proptest): three bytes make one `/Pages` node —
/// its kids (other nodes, so cycles and shared subtrees, or the pages), its
/// `/Count` (true, huge, negative or not a number) and whether it has a
/// `/Type`. Node 0 is the root.
pub fn page_tree_from(spec: &[u8]) -> io::Result<Vec<u8>> {
    let (mut doc, pages) = two_pages("The first page of a fuzzed tree.", "Its second page.")?;
    let n = (spec.len() / 3).clamp(1, 48);
    let nodes: Vec<ObjectId> = (0..n).map(|_| doc.new_object_id()).collect();
    for (i, &id) in nodes.iter().enumerate() {
        let b = |k: usize| spec.get(i * 3 + k).copied().unwrap_or(0);
        let (shape, kid, count) = (b(0), b(1), b(2));
        let target = |x: u8| -> Object {
            match x % 4 {
                0 => pages[0].into(),
                1 => pages[1].into(),
                _ => nodes[x as usize % n].into(),
            }
        };
        let kids: Vec<Object> = match shape % 4 {
            0 => vec![target(kid)],
            1 => vec![target(kid), target(count)],
            2 => vec![target(kid), target(kid), target(kid.wrapping_add(1))],
            _ => Vec::new(),
        };
        let count: Object = match count % 5 {
            0 => Object::Integer(kids.len() as i64),
            1 => Object::Integer(100_000_000_000_000),
            2 => Object::Integer(-1 - count as i64),
            3 => Object::Integer(i64::MAX),
            _ => Object::string_literal("many"),
        };
        let mut node = dictionary! { "Kids" => kids, "Count" => count };
        if shape & 0x10 == 0 {
            node.set("Type", "Pages");
        }
        if i > 0 && shape & 0x20 != 0 {
            node.set("Parent", nodes[(i - 1) / 2]);
        }
        doc.objects.insert(id, Object::Dictionary(node));
    }
    finish_tree(doc, nodes[0], &pages)
}

/// A two-page document, loaded, with its page ids.
fn two_pages(first: &str, second: &str) -> io::Result<(Document, Vec<ObjectId>)> {
    let mut pdf = Pdf::new();
    pdf.latin_font("F1", "Helvetica");
    for text in [first, second] {
        let mut page = Page::new();
        page.paragraph(&pdf, "F1", 12.0, MARGIN, TOP, BODY, text);
        pdf.add_page(page)?;
    }
    let bytes = pdf.finish(None, None)?;
    let doc = Document::load_mem(&bytes).map_err(other)?;
    let pages: Vec<ObjectId> = doc.get_pages().into_values().collect();
    Ok((doc, pages))
}

/// Points the catalog at the page tree `root` and saves.
fn finish_tree(mut doc: Document, root: ObjectId, pages: &[ObjectId]) -> io::Result<Vec<u8>> {
    // What the pages inherited from the old root, they now hold themselves.
    let old_root = doc
        .catalog()
        .and_then(|c| c.get(b"Pages"))
        .and_then(Object::as_reference)
        .map_err(other)?;
    let inherited: Vec<(Vec<u8>, Object)> = doc
        .get_dictionary(old_root)
        .map_err(other)?
        .iter()
        .filter(|(k, _)| matches!(k.as_slice(), b"Resources" | b"MediaBox"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for &p in pages {
        if let Ok(page) = doc.get_dictionary_mut(p) {
            page.set("Parent", root);
            for (k, v) in &inherited {
                if !page.has(k) {
                    page.set(k.clone(), v.clone());
                }
            }
        }
    }
    let catalog = doc.catalog().map_err(other)?.clone();
    let mut catalog = catalog;
    catalog.set("Pages", root);
    let catalog = doc.add_object(catalog);
    doc.trailer.set("Root", catalog);
    let mut out = Vec::new();
    doc.save_to(&mut out).map_err(other)?;
    Ok(out)
}

/// Writes the bad-input files into `dir` and returns them.
pub fn write_bad_inputs(dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let full = long_pdf(3);
    let truncated = full[..full.len() * 6 / 10].to_vec();
    let mut nested = b"BT /F1 12 Tf 72 700 Td ".to_vec();
    nested.extend(std::iter::repeat_n(b'[', 10_000));
    nested.extend(std::iter::repeat_n(b']', 10_000));
    nested.extend_from_slice(b" TJ (nested but fine) Tj ET");
    let nested_pdf = {
        let mut pdf = Pdf::new();
        pdf.latin_font("F1", "Helvetica");
        pdf.add_page(Page { ops: Vec::new() })?;
        let mut bytes = pdf.finish(None, None)?;
        // Swap the empty content for the nested one, keeping the file valid.
        let mut doc = Document::load_mem(&bytes).map_err(other)?;
        let page_id = *doc
            .get_pages()
            .values()
            .next()
            .ok_or_else(|| other("no page"))?;
        let content_id = doc.add_object(Stream::new(dictionary! {}, nested));
        if let Ok(page) = doc.get_dictionary_mut(page_id) {
            page.set("Contents", content_id);
            let mut deep = Object::Integer(1);
            // Deeper than lopdf's parser accepts (100), shallow enough to write.
            for _ in 0..400 {
                deep = Object::Array(vec![deep]);
            }
            page.set("Deep", deep);
        }
        bytes.clear();
        doc.save_to(&mut bytes).map_err(other)?;
        bytes
    };
    let garbage = {
        let mut pdf = Pdf::new();
        pdf.latin_font("F1", "Helvetica");
        pdf.add_page(Page::new())?;
        let mut second = Page::new();
        second.show(
            &pdf,
            "F1",
            12.0,
            MARGIN,
            TOP,
            "The second page survives a broken first page.",
        );
        pdf.add_page(second)?;
        let bytes = pdf.finish(None, None)?;
        let mut doc = Document::load_mem(&bytes).map_err(other)?;
        let first = *doc.get_pages().get(&1).ok_or_else(|| other("no page"))?;
        let junk: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_246_822_519) >> 13) as u8)
            .collect();
        let content_id = doc.add_object(
            Stream::new(dictionary! { "Filter" => "FlateDecode" }, junk).with_compression(false),
        );
        if let Ok(page) = doc.get_dictionary_mut(first) {
            page.set("Contents", content_id);
        }
        let mut out = Vec::new();
        doc.save_to(&mut out).map_err(other)?;
        out
    };
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("empty.pdf", Vec::new()),
        ("not-a-pdf.pdf", b"<!DOCTYPE html><html><body>This is a web page saved with a .pdf name.</body></html>\n".to_vec()),
        ("truncated.pdf", truncated),
        ("encrypted-empty-password.pdf", encrypted("", "This document is encrypted but readable without a password.")?),
        ("encrypted-secret.pdf", encrypted("secret", "Nobody should read this without the password.")?),
        ("cyclic.pdf", cyclic()?),
        ("nested.pdf", nested_pdf),
        ("garbage-stream.pdf", garbage),
        ("page-count-bomb.pdf", page_count_bomb()?),
        ("page-dag.pdf", page_dag()?),
    ];
    let mut out = Vec::new();
    for (name, bytes) in files {
        let path = dir.join(name);
        std::fs::write(&path, bytes)?;
        out.push(path);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus_is_deterministic_and_loads() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let fa = write_sample_corpus(a.path()).unwrap();
        let fb = write_sample_corpus(b.path()).unwrap();
        for (x, y) in fa.iter().zip(&fb) {
            assert_eq!(
                std::fs::read(x).unwrap(),
                std::fs::read(y).unwrap(),
                "{}",
                x.display()
            );
            if x.extension().unwrap() == "pdf" && !x.ends_with("damaged.pdf") {
                Document::load(x).unwrap();
            }
        }
    }

    #[test]
    fn long_pdf_has_all_pages() {
        let doc = Document::load_mem(&long_pdf(1200)).unwrap();
        assert_eq!(doc.get_pages().len(), 1200);
    }
}
