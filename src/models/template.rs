//! Chat templates: the Jinja `chat_template` of a model's
//! `tokenizer_config.json`, rendered the way transformers'
//! `apply_chat_template` renders it (minijinja, with Python's string
//! methods from minijinja-contrib's pycompat), so a model gets the exact
//! prompt format it was trained on. Qwen3's thinking is switched off
//! (`enable_thinking=False`).

use std::path::Path;

use serde::Serialize;

use crate::{Error, Result};

/// One message of a conversation.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Message<'a> {
    /// `system`, `user` or `assistant`.
    pub role: &'a str,
    /// Its text.
    pub content: &'a str,
}

/// A model's chat template.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: String,
    bos_token: String,
    eos_token: String,
}

/// A special token as tokenizer_config.json writes it: a string or
/// `{"content": ...}`.
fn token(v: &serde_json::Value) -> String {
    v.as_str()
        .or_else(|| v.get("content").and_then(|c| c.as_str()))
        .unwrap_or_default()
        .to_string()
}

impl ChatTemplate {
    /// A template from its Jinja source.
    pub fn new(source: impl Into<String>) -> ChatTemplate {
        ChatTemplate {
            source: source.into(),
            bos_token: String::new(),
            eos_token: String::new(),
        }
    }

    /// The template of `tokenizer_config.json` at `path`; `None` when the
    /// file or its `chat_template` is missing. A list of named templates
    /// gives the one named `default`.
    pub fn from_tokenizer_config(path: &Path) -> Result<Option<ChatTemplate>> {
        let Ok(text) = std::fs::read_to_string(path) else {
            return Ok(None);
        };
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(Error::tokenizer(format!("{}", path.display())))?;
        let source = match &v["chat_template"] {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Array(named) => named
                .iter()
                .find(|t| t["name"] == "default")
                .and_then(|t| t["template"].as_str())
                .map(str::to_string),
            _ => None,
        };
        Ok(source.map(|source| ChatTemplate {
            source,
            bos_token: token(&v["bos_token"]),
            eos_token: token(&v["eos_token"]),
        }))
    }

    /// The prompt for `messages`, ending with the assistant's turn opened
    /// when `add_generation_prompt`.
    pub fn render(&self, messages: &[Message<'_>], add_generation_prompt: bool) -> Result<String> {
        let mut env = minijinja::Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        let bad = |e: minijinja::Error| Error::Tokenizer(format!("chat template: {e:#}"));
        let template = env.template_from_str(&self.source).map_err(bad)?;
        template
            .render(minijinja::context! {
                messages => minijinja::Value::from(minijinja::value::Serde(messages)),
                add_generation_prompt => add_generation_prompt,
                enable_thinking => false,
                bos_token => self.bos_token.as_str(),
                eos_token => self.eos_token.as_str(),
                tools => minijinja::Value::UNDEFINED,
            })
            .map_err(bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_with_python_string_methods() {
        let t = ChatTemplate::new(
            "{%- for m in messages %}{{ m.role | upper }}: {{ m.content.strip() }}{% if m.content.strip().startswith('x') %}!{% endif %}\n{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}",
        );
        let msgs = [
            Message {
                role: "user",
                content: "  x marks the spot ",
            },
            Message {
                role: "assistant",
                content: "yes",
            },
        ];
        assert_eq!(
            t.render(&msgs, true).unwrap(),
            "USER: x marks the spot!\nASSISTANT: yes\nASSISTANT:"
        );
        let broken = ChatTemplate::new("{% if %}");
        assert!(matches!(
            broken.render(&msgs, true),
            Err(Error::Tokenizer(_))
        ));
        let raising = ChatTemplate::new("{{ raise_exception('no system role') }}");
        let e = raising.render(&msgs, true).unwrap_err().to_string();
        assert!(e.contains("no system role"), "{e}");
    }

    /// The real Qwen3 template (fetched by corpora/fetch-qwen-tokenizer.sh)
    /// renders exactly the prompt shirabe writes itself.
    #[test]
    fn qwen3_template_matches_the_built_in_prompt() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpora/models/qwen3-tokenizer/tokenizer_config.json");
        let Some(t) = ChatTemplate::from_tokenizer_config(&path).unwrap() else {
            panic!("no Qwen3 tokenizer_config.json at {}: run corpora/fetch-qwen-tokenizer.sh (.ci/run does)", path.display());
        };
        let user = crate::prompt::user_turn("<passage id=\"1\">x</passage>\n", "What?");
        let history = [("Earlier?".to_string(), "Before [1].".to_string())];
        let msgs = [
            Message {
                role: "system",
                content: crate::prompt::SYSTEM_PROMPT,
            },
            Message {
                role: "user",
                content: &history[0].0,
            },
            Message {
                role: "assistant",
                content: &history[0].1,
            },
            Message {
                role: "user",
                content: &user,
            },
        ];
        assert_eq!(
            t.render(&msgs, true).unwrap(),
            crate::prompt::render(
                crate::prompt::SYSTEM_PROMPT,
                "<passage id=\"1\">x</passage>\n",
                "What?",
                &history
            )
        );
    }
}
