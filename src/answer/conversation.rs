//! A conversation (`chat`, the TUI): its finished turns, the sources each
//! cited, and the Markdown it is saved as.

use super::Checked;
use crate::prompt::Passage;

/// One finished question and answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    /// The question.
    pub question: String,
    /// The answer, citations checked.
    pub answer: String,
    /// `[n] title — p. 3 (path)` for each cited passage.
    pub sources: Vec<String>,
}

/// `[n] title — p. 3 (path)` for each passage `checked` cites, in order.
pub fn cited_sources(passages: &[Passage], checked: &Checked) -> Vec<String> {
    let mut cited: Vec<usize> = checked.citations.iter().map(|c| c.n).collect();
    cited.sort_unstable();
    cited.dedup();
    cited
        .into_iter()
        .filter_map(|n| passages.get(n.checked_sub(1)?))
        .map(|p| format!("[{}] {} — {} ({})", p.n, p.title, p.pages(), p.path))
        .collect()
}

/// The turns as Markdown under the heading `title`: each question a
/// section, its answer, then its sources.
pub fn to_markdown(title: &str, turns: &[Turn]) -> String {
    let mut md = format!("# {title}\n");
    for t in turns {
        md.push_str(&format!("\n## {}\n\n{}\n", t.question, t.answer));
        if !t.sources.is_empty() {
            md.push_str("\nSources:\n\n");
            for s in &t.sources {
                md.push_str(&format!("- {s}\n"));
            }
        }
    }
    md
}
