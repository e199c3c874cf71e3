//! The question's language, told to the model in that language, and
//! checked in the answer.
//!
//! Small models answer a Japanese question in Chinese, or an English one in
//! the language of the passages, unless told plainly, last, and in the
//! language wanted. [`Lang::of`] reads the language from the script of the
//! text (kana means Japanese, Han without kana Chinese, Hangul Korean,
//! Latin letters English); [`Lang::instruction`] is the closing line of
//! the user turn; [`Lang::written_in`] checks an answer's script.

use serde::Serialize;

/// A language the answer must be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    /// English (and any other language in Latin script).
    En,
    /// Japanese.
    Ja,
    /// Chinese.
    Zh,
    /// Korean.
    Ko,
}

/// Counts of letters by script.
#[derive(Debug, Default, Clone, Copy)]
struct Scripts {
    latin: usize,
    kana: usize,
    han: usize,
    hangul: usize,
}

fn scripts(text: &str) -> Scripts {
    let mut s = Scripts::default();
    for c in text.chars() {
        match c as u32 {
            0x3040..=0x30FF | 0x31F0..=0x31FF | 0xFF66..=0xFF9F => s.kana += 1,
            0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x2FA1F => s.han += 1,
            0xAC00..=0xD7AF | 0x1100..=0x11FF | 0x3130..=0x318F => s.hangul += 1,
            _ if c.is_alphabetic() => s.latin += 1,
            _ => {}
        }
    }
    s
}

impl Lang {
    /// The language `text` is written in (English when it has no letters).
    pub fn of(text: &str) -> Lang {
        let s = scripts(text);
        let cjk = s.kana + s.han + s.hangul;
        // A few Latin words (names, commands) in a CJK question do not
        // make it English; a CJK name in an English one does not either.
        if cjk == 0 || (s.latin > 4 * cjk && cjk < 4) {
            Lang::En
        } else if s.hangul > s.kana + s.han / 2 {
            Lang::Ko
        } else if s.kana > 0 {
            Lang::Ja
        } else {
            Lang::Zh
        }
    }

    /// Its code (`en`, `ja`, `zh`, `ko`).
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Ja => "ja",
            Lang::Zh => "zh",
            Lang::Ko => "ko",
        }
    }

    /// Its name in English.
    pub fn name(self) -> &'static str {
        match self {
            Lang::En => "English",
            Lang::Ja => "Japanese",
            Lang::Zh => "Chinese",
            Lang::Ko => "Korean",
        }
    }

    /// The closing line of the user turn, in the language itself: answer
    /// in this language, from the passages, citing each sentence.
    pub fn instruction(self) -> &'static str {
        match self {
            Lang::En => "Answer in English, using only the passages above. End every sentence with the id of the passage it comes from, like [1].",
            Lang::Ja => "上の資料だけを使って、日本語で答えてください。各文の終わりに、その根拠の資料番号を [1] のように書いてください。",
            Lang::Zh => "请只根据上面的资料，用简体中文回答。每句话的末尾用 [1] 这样的格式注明资料编号。",
            Lang::Ko => "위의 자료만 사용하여 한국어로 답하십시오. 각 문장 끝에 근거 자료 번호를 [1]처럼 쓰십시오.",
        }
    }

    /// A firmer instruction, for the one retry after an answer in the
    /// wrong language.
    pub fn insistence(self) -> &'static str {
        match self {
            Lang::En => "Write the whole answer in English, even where the passages are in another language.",
            Lang::Ja => "回答はすべて日本語で書いてください。中国語や英語で書かないでください。",
            Lang::Zh => "请全部用中文回答，不要使用日语或英语。",
            Lang::Ko => "답변 전체를 한국어로 쓰십시오.",
        }
    }

    /// Whether `answer` is written in this language, judged by its
    /// letters with citations, code and quoted names set aside: Japanese
    /// needs kana, Chinese Han with (almost) no kana, Korean Hangul,
    /// English mostly Latin letters. An answer with too few letters to
    /// tell passes.
    pub fn written_in(self, answer: &str) -> bool {
        let prose: String = strip_code(answer);
        let s = scripts(&prose);
        let cjk = s.kana + s.han + s.hangul;
        let letters = s.latin + cjk;
        if letters < 8 {
            return true;
        }
        match self {
            // Latin words cost several letters each; a CJK character is a
            // word or half of one.
            Lang::En => 3 * cjk <= s.latin,
            Lang::Ja => s.kana * 20 >= cjk.max(1) && s.kana > 0,
            Lang::Zh => s.han > 0 && s.kana * 20 < s.han && s.han * 2 >= s.hangul,
            Lang::Ko => s.hangul * 2 >= cjk,
        }
    }
}

/// `text` without `code spans` and fenced blocks (commands and file names
/// are not the answer's language).
fn strip_code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_code = false;
    for c in text.chars() {
        if c == '`' {
            in_code = !in_code;
        } else if !in_code {
            out.push(c);
        }
    }
    // Command names, options, identifiers and paths outside code spans
    // (`\usepackage`, `--ctx`, `font_size`, `a/b.tex`) are not prose either.
    out.split_whitespace()
        .filter(|w| {
            !(w.starts_with(['\\', '-', '<'])
                || w.contains(['_', '/', '=', '{', '\\'])
                || (w.contains('.') && !w.ends_with('.')))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_by_script() {
        assert_eq!(Lang::of("How much was the budget for Osaka?"), Lang::En);
        assert_eq!(
            Lang::of("大阪倉庫の拡張計画について何が決まりましたか？"),
            Lang::Ja
        );
        assert_eq!(Lang::of("上海仓库的扩建预算是多少？"), Lang::Zh);
        assert_eq!(Lang::of("\\jaholidayname の引数は？"), Lang::Ja);
        assert_eq!(Lang::of("What does 東京 mean in the report?"), Lang::En);
        assert_eq!(Lang::of("예산은 얼마입니까?"), Lang::Ko);
        assert_eq!(Lang::of("1234 ?"), Lang::En);
    }

    #[test]
    fn answers_by_script() {
        let ja = "大阪倉庫の拡張予算として420万ユーロが承認されました [1]。";
        let zh = "大阪仓库扩建预算为420万欧元，已获批准 [1]。";
        let en = "The board approved 4.2 million euros for the Osaka warehouse [1].";
        assert!(Lang::Ja.written_in(ja));
        assert!(!Lang::Ja.written_in(zh));
        assert!(Lang::Zh.written_in(zh));
        assert!(!Lang::Zh.written_in(ja));
        assert!(Lang::En.written_in(en));
        assert!(!Lang::En.written_in(ja));
        assert!(!Lang::Ja.written_in(en));
        // Commands in code spans do not count against the language.
        assert!(Lang::Ja.written_in(
            "`\\usepackage{bxjaholiday}` と `\\jaholidayname{2024}{1}{1}` を使います。"
        ));
        // Too short to tell, or only a command's name.
        assert!(Lang::Ja.written_in("[1]"));
        assert!(Lang::Ja.written_in("\\usedialogueparenindent [2] [1]"));
        assert!(Lang::Zh.written_in("使用 \\ctexset{today=big} 和 font_size.tex。"));
    }
}
