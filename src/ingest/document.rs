//! What every loader produces: a document's metadata and its pages of text.

use serde::Serialize;

/// A loaded document, before chunking.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExtractedDoc {
    /// Title from the document information or the first heading.
    pub title: Option<String>,
    /// Author from the document information.
    pub author: Option<String>,
    /// Creation date (ISO 8601 when it could be read).
    pub created: Option<String>,
    /// Modification date (ISO 8601 when it could be read).
    pub modified: Option<String>,
    /// The pages, in order; text files have one.
    pub pages: Vec<PageText>,
    /// Problems that cost some text but not the document.
    pub warnings: Vec<String>,
}

/// The text of one page, as the index sees it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PageText {
    /// Physical page number, from 1.
    pub page: u32,
    /// The printed label from /PageLabels ("iv", "12"), if the PDF has one.
    pub label: Option<String>,
    /// Blocks separated by blank lines, lines by newlines.
    pub text: String,
    /// Section headings on this page: (byte offset into `text`, heading).
    #[serde(skip)]
    pub headings: Vec<(usize, String)>,
}

impl ExtractedDoc {
    /// Total characters of text, to tell an empty (scanned) document apart.
    pub fn char_count(&self) -> usize {
        self.pages.iter().map(|p| p.text.len()).sum()
    }
}
