//! Drawing an [`App`]: the query line, the list (results, sources or
//! documents), the answer, the passage preview, the status bar with the
//! token-budget gauge, and the key help. Pure rendering; the layout it
//! used is written back to the app for the mouse.

use std::collections::HashSet;
use std::time::Instant;

use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Block, Borders, Clear, Gauge, List, ListItem, ListState, Paragraph, Wrap};
use ratatui::Frame;

use super::app::{App, Areas, Focus, ListView, Preview, Prompt};
use crate::answer::parse_citations;
use crate::index::analyzer::terms;
use crate::index::manifest::FileStatus;

/// Styles, with or without colour (`NO_COLOR`): without, only bold,
/// underline, reverse and dim tell things apart.
#[derive(Debug, Clone, Copy)]
struct Theme {
    color: bool,
}

impl Theme {
    fn fg(self, c: Color) -> Style {
        if self.color {
            Style::default().fg(c)
        } else {
            Style::default()
        }
    }
    fn border(self, focused: bool) -> Style {
        if focused {
            self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
        } else {
            self.fg(Color::DarkGray)
        }
    }
    fn cite(self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::UNDERLINED)
    }
    fn term(self) -> Style {
        if self.color {
            Style::default()
                .fg(Color::Yellow)
                .add_modifier(Modifier::BOLD)
        } else {
            Style::default().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
        }
    }
    fn quote(self) -> Style {
        if self.color {
            Style::default().bg(Color::Rgb(40, 60, 40))
        } else {
            Style::default().add_modifier(Modifier::REVERSED)
        }
    }
    fn unsupported(self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::UNDERLINED)
    }
    fn error(self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }
    fn dim(self) -> Style {
        if self.color {
            Style::default().fg(Color::DarkGray)
        } else {
            Style::default().add_modifier(Modifier::DIM)
        }
    }
    fn path(self) -> Style {
        self.fg(Color::Magenta)
    }
    fn page(self) -> Style {
        self.fg(Color::Green)
    }
    fn selected(self) -> Style {
        if self.color {
            Style::default()
                .bg(Color::Rgb(50, 50, 70))
                .add_modifier(Modifier::BOLD)
        } else {
            Style::default().add_modifier(Modifier::REVERSED)
        }
    }
}

/// Where each part of the screen goes.
struct Screen {
    areas: Areas,
    gauge: Option<Rect>,
    status_line: Rect,
    info: Rect,
}

fn layout(area: Rect, ingesting: bool) -> Screen {
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(3),
            Constraint::Min(6),
            Constraint::Length(u16::from(ingesting)),
            Constraint::Length(1),
            Constraint::Length(1),
        ])
        .split(area);
    let body = rows[1];
    let (list, answer, preview) = if body.width >= 100 {
        let cols = Layout::default()
            .direction(Direction::Horizontal)
            .constraints([Constraint::Percentage(38), Constraint::Percentage(62)])
            .split(body);
        let right = Layout::default()
            .direction(Direction::Vertical)
            .constraints([Constraint::Percentage(45), Constraint::Percentage(55)])
            .split(cols[1]);
        (cols[0], right[0], right[1])
    } else {
        let parts = Layout::default()
            .direction(Direction::Vertical)
            .constraints([
                Constraint::Percentage(30),
                Constraint::Percentage(30),
                Constraint::Percentage(40),
            ])
            .split(body);
        (parts[0], parts[1], parts[2])
    };
    Screen {
        areas: Areas {
            query: rows[0],
            list,
            answer,
            preview,
        },
        gauge: ingesting.then_some(rows[2]),
        status_line: rows[3],
        info: rows[4],
    }
}

/// Draws the whole screen and records where the panes went.
pub fn draw(f: &mut Frame<'_>, app: &mut App, now: Instant) {
    let screen = layout(f.area(), app.ingest.is_some());
    app.areas = screen.areas;
    let th = Theme { color: app.color };
    draw_query(f, app, th, screen.areas.query);
    draw_list(f, app, th, screen.areas.list);
    draw_answer(f, app, th, screen.areas.answer, now);
    draw_preview(f, app, th, screen.areas.preview);
    if let (Some(r), Some(i)) = (screen.gauge, &app.ingest) {
        let ratio = if i.total == 0 {
            0.0
        } else {
            i.done as f64 / i.total as f64
        };
        let label = format!(
            "ingesting {}: {}/{} files{}",
            i.path,
            i.done,
            i.total,
            if i.current.is_empty() {
                String::new()
            } else {
                format!(" · {}", i.current)
            }
        );
        f.render_widget(
            Gauge::default()
                .gauge_style(th.fg(Color::Blue))
                .ratio(ratio.clamp(0.0, 1.0))
                .label(label),
            r,
        );
    }
    draw_status_line(f, app, th, screen.status_line);
    draw_info(f, app, th, screen.info);
    if app.help {
        draw_help(f, th);
    }
}

fn pane<'a>(title: impl Into<Line<'a>>, focused: bool, th: Theme) -> Block<'a> {
    Block::default()
        .borders(Borders::ALL)
        .border_style(th.border(focused))
        .title(title)
}

fn draw_query(f: &mut Frame<'_>, app: &App, th: Theme, r: Rect) {
    let focused = app.focus == Focus::Query;
    let mut title = vec![Span::raw(" shirabe — ask or search ")];
    if app.searching() {
        title.push(Span::styled("searching… ", th.dim()));
    }
    // Long queries scroll sideways so the cursor stays in view.
    let room = usize::from(r.width.saturating_sub(5)).max(1);
    let before: String = app.query.chars().take(app.cursor).collect();
    let before_w = Line::raw(before.as_str()).width();
    let mut skip = 0usize;
    let mut skipped_w = 0usize;
    let chars: Vec<char> = app.query.chars().collect();
    while before_w - skipped_w >= room && skip < chars.len() {
        skipped_w += Line::raw(chars[skip].to_string()).width();
        skip += 1;
    }
    let shown: String = chars[skip..].iter().collect();
    let line = if app.query.is_empty() && !focused {
        Line::from(Span::styled("/ to type a question", th.dim()))
    } else {
        Line::from(vec![
            Span::styled(if skip > 0 { "…" } else { "> " }, th.dim()),
            Span::raw(shown),
        ])
    };
    f.render_widget(
        Paragraph::new(line).block(pane(Line::from(title), focused, th)),
        r,
    );
    if focused {
        let x = r.x + 3 + (before_w - skipped_w) as u16;
        f.set_cursor_position((x.min(r.right().saturating_sub(2)), r.y + 1));
    }
}

fn draw_list(f: &mut Frame<'_>, app: &App, th: Theme, r: Rect) {
    let focused = app.focus == Focus::List;
    let (title, items): (String, Vec<ListItem>) = match app.list {
        ListView::Results => (
            if app.results_query.is_empty() {
                " Results ".into()
            } else {
                format!(" Results ({}) ", app.results.len())
            },
            app.results
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    let head = Line::from(vec![
                        Span::styled(format!("{}. ", i + 1), th.dim()),
                        Span::styled(h.title.clone().unwrap_or_else(|| h.path.clone()), th.path()),
                        Span::raw(" "),
                        Span::styled(
                            crate::prompt::ocr_mark(
                                crate::prompt::page_range(h.page, h.page, h.page_label.as_deref()),
                                h.ocr,
                            ),
                            th.page(),
                        ),
                    ]);
                    let snippet =
                        marked_line(&h.snippet, &char_ranges(&h.snippet, &h.highlights), th);
                    ListItem::new(Text::from(vec![head, snippet]))
                })
                .collect(),
        ),
        ListView::Sources => {
            let a = app.answer.as_ref().and_then(|a| a.answer.as_ref());
            let cited: HashSet<usize> = a
                .map(|a| a.checked.citations.iter().map(|c| c.n).collect())
                .unwrap_or_default();
            (
                format!(
                    " Sources ({} passages, {} cited) · r: results ",
                    app.sources().len(),
                    cited.len()
                ),
                app.sources()
                    .iter()
                    .map(|p| {
                        let mark = if cited.contains(&p.n) {
                            Span::styled(
                                format!("[{}] ", p.n),
                                th.cite().add_modifier(Modifier::BOLD),
                            )
                        } else {
                            Span::styled(format!("[{}] ", p.n), th.dim())
                        };
                        let head = Line::from(vec![
                            mark,
                            Span::styled(p.title.clone(), th.path()),
                            Span::raw(" "),
                            Span::styled(p.pages(), th.page()),
                        ]);
                        let text: String = p.text.split_whitespace().collect::<Vec<_>>().join(" ");
                        ListItem::new(Text::from(vec![head, Line::styled(text, th.dim())]))
                    })
                    .collect(),
            )
        }
        ListView::Documents => (
            format!(
                " Documents ({}) · s/m: summarize · o: open · i: ingest ",
                app.documents.len()
            ),
            app.documents
                .iter()
                .map(|d| {
                    let head = Line::from(Span::styled(d.path.clone(), th.path()));
                    let detail = match d.status {
                        FileStatus::Ok => Line::styled(
                            format!(
                                "{} pages · {} chunks{}",
                                d.pages,
                                d.chunks,
                                if d.warnings.is_empty() {
                                    String::new()
                                } else {
                                    format!(" · {} warnings", d.warnings.len())
                                }
                            ),
                            th.dim(),
                        ),
                        FileStatus::Empty => {
                            Line::styled("no text (a scan without a text layer?)", th.error())
                        }
                        FileStatus::Failed => Line::styled(
                            format!("failed: {}", d.error.as_deref().unwrap_or("unknown error")),
                            th.error(),
                        ),
                    };
                    ListItem::new(Text::from(vec![head, detail]))
                })
                .collect(),
        ),
    };
    let empty = items.is_empty();
    let block = pane(title, focused, th);
    if empty {
        let hint = match app.list {
            ListView::Results if app.info.chunks == 0 => {
                "The index is empty: press i (outside the query line) to ingest a folder."
            }
            ListView::Results if app.results_query.is_empty() => {
                "Type to search; results update as you type."
            }
            ListView::Results => "Nothing matches.",
            ListView::Sources => "No passages.",
            ListView::Documents => "No documents yet: press i to ingest a folder.",
        };
        f.render_widget(
            Paragraph::new(Line::styled(hint, th.dim()))
                .wrap(Wrap { trim: true })
                .block(block),
            r,
        );
        return;
    }
    let mut state = ListState::default().with_selected(Some(app.selected()));
    f.render_stateful_widget(
        List::new(items).block(block).highlight_style(th.selected()),
        r,
        &mut state,
    );
}

/// Character ranges (as [`crate::retrieve::Hit::highlights`] gives them)
/// to byte ranges.
fn char_ranges(text: &str, ranges: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let at: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain([text.len()])
        .collect();
    let b = |c: usize| at.get(c).copied().unwrap_or(text.len());
    ranges.iter().map(|&(s, e)| (b(s), b(e))).collect()
}

fn marked_line<'a>(text: &str, ranges: &[(usize, usize)], th: Theme) -> Line<'a> {
    let marks: Vec<(usize, usize, Style)> =
        ranges.iter().map(|&(s, e)| (s, e, th.term())).collect();
    styled(text, &marks, Style::default())
        .into_iter()
        .next()
        .unwrap_or_default()
}

/// `text` as lines, with `marks` (byte ranges and styles, later ones on
/// top) patched over `base`.
fn styled<'a>(text: &str, marks: &[(usize, usize, Style)], base: Style) -> Vec<Line<'a>> {
    let fix = |mut i: usize| {
        i = i.min(text.len());
        while !text.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let mut cuts: Vec<usize> = vec![0, text.len()];
    for &(s, e, _) in marks {
        cuts.push(fix(s));
        cuts.push(fix(e));
    }
    cuts.sort_unstable();
    cuts.dedup();
    let mut lines: Vec<Line<'a>> = vec![Line::default()];
    for w in cuts.windows(2) {
        let (a, b) = (w[0], w[1]);
        let mut style = base;
        for &(s, e, st) in marks {
            if fix(s) <= a && b <= fix(e) {
                style = style.patch(st);
            }
        }
        for (k, part) in text[a..b].split('\n').enumerate() {
            if k > 0 {
                lines.push(Line::default());
            }
            if !part.is_empty() {
                let part = part.replace('\t', "    ");
                lines
                    .last_mut()
                    .expect("at least one line")
                    .spans
                    .push(Span::styled(part, style));
            }
        }
    }
    lines
}

fn draw_answer(f: &mut Frame<'_>, app: &mut App, th: Theme, r: Rect, now: Instant) {
    let focused = app.focus == Focus::Answer;
    let Some(view) = &app.answer else {
        let lines = vec![
            Line::styled("Type a question and press Enter.", th.dim()),
            Line::styled(
                "The answer streams here, with [n] citations checked against the passages;",
                th.dim(),
            ),
            Line::styled(
                "1–9 or ]/[ show a cited passage, o opens its page, ? lists the keys.",
                th.dim(),
            ),
        ];
        f.render_widget(
            Paragraph::new(lines)
                .wrap(Wrap { trim: false })
                .block(pane(" Answer ", focused, th)),
            r,
        );
        return;
    };
    let title = if view.running() {
        format!(
            " {} — {}… {:.1}s{} · Esc stops ",
            if view.turn { "Answer" } else { "Summary" },
            // The phase line says what precedes the text.
            if view.text.is_empty() {
                "preparing"
            } else {
                "writing"
            },
            now.saturating_duration_since(view.started).as_secs_f64(),
            view.pieces_per_s(now)
                .map_or(String::new(), |r| format!(" · {r:.0} tok/s"))
        )
    } else {
        format!(
            " {} · y: copy · w: save ",
            if view.turn { "Answer" } else { "Summary" }
        )
    };
    let mut lines = vec![
        Line::from(Span::styled(
            view.question.clone(),
            Style::default().add_modifier(Modifier::BOLD),
        )),
        Line::default(),
    ];
    match &view.answer {
        None => {
            let text = &view.text;
            let marks: Vec<(usize, usize, Style)> = parse_citations(text)
                .into_iter()
                .map(|c| (c.span.0, c.span.1, th.cite()))
                .collect();
            let mut body = styled(text, &marks, Style::default());
            if let Some(last) = body.last_mut() {
                last.spans.push(Span::styled("▌", th.dim()));
            }
            if text.is_empty() {
                let (phase, progress) = match &view.phase {
                    Some((t, p)) => (t.as_str(), *p),
                    None => ("retrieving passages…", None),
                };
                body = vec![Line::styled(phase.to_string(), th.dim())];
                if let Some(p) = progress {
                    body.push(progress_bar(p, th));
                }
            } else if let Some((p, _)) = view.phase.as_ref().filter(|p| p.0.starts_with("checking"))
            {
                body.push(Line::styled(p.clone(), th.dim()));
            }
            lines.extend(body);
        }
        Some(a) => {
            let full = &a.checked.answer;
            let lead = full.len() - full.trim_start().len();
            let text = full.trim();
            if text.is_empty() {
                lines.push(Line::raw(view.text.clone()));
            } else {
                let shift = |x: usize| x.saturating_sub(lead);
                let mut marks: Vec<(usize, usize, Style)> = a
                    .checked
                    .unsupported
                    .iter()
                    .map(|u| (shift(u.sentence.0), shift(u.sentence.1), th.unsupported()))
                    .collect();
                marks.extend(
                    parse_citations(text)
                        .into_iter()
                        .map(|c| (c.span.0, c.span.1, th.cite())),
                );
                lines.extend(styled(text, &marks, Style::default()));
            }
            lines.push(Line::default());
            if !a.checked.unsupported.is_empty() {
                lines.push(Line::styled(
                    format!(
                        "⚠ {} claim(s) not supported by the passages they cite (underlined)",
                        a.checked.unsupported.len()
                    ),
                    th.error(),
                ));
            }
            if !a.checked.invalid.is_empty() {
                lines.push(Line::styled(
                    format!(
                        "⚠ removed citations to passages that do not exist: {}",
                        a.checked
                            .invalid
                            .iter()
                            .map(|n| format!("[{n}]"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    th.error(),
                ));
            }
            if a.extractive {
                lines.push(Line::styled(crate::answer::MODEL_HINT, th.dim()));
            }
            let sources = crate::answer::conversation::cited_sources(&a.passages, &a.checked);
            if !sources.is_empty() {
                lines.push(Line::default());
                lines.push(Line::styled(
                    "Sources",
                    Style::default().add_modifier(Modifier::BOLD),
                ));
                for s in sources {
                    lines.push(Line::raw(s));
                }
            }
        }
    }
    let para = Paragraph::new(lines).wrap(Wrap { trim: false });
    // While it is written, the pane follows the end of the answer unless
    // the user scrolled.
    let shown = usize::from(r.height.saturating_sub(2));
    let total = para.line_count(r.width.saturating_sub(2));
    let max = u16::try_from(total.saturating_sub(shown)).unwrap_or(u16::MAX);
    let running = view.running();
    let scroll = app
        .answer_scroll
        .resolve(if running { max } else { 0 }, max);
    f.render_widget(para.scroll((scroll, 0)).block(pane(title, focused, th)), r);
}

/// Byte ranges of `text` holding terms of `query` (as the index analyses
/// both, so CJK matches by bigram).
fn query_terms(text: &str, query: &str) -> Vec<(usize, usize)> {
    let wanted: HashSet<String> = terms(query).into_iter().map(|t| t.0).collect();
    terms(text)
        .into_iter()
        .filter(|t| wanted.contains(&t.0))
        .map(|t| (t.1, t.2))
        .collect()
}

fn draw_preview(f: &mut Frame<'_>, app: &mut App, th: Theme, r: Rect) {
    let focused = app.focus == Focus::Preview;
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let mut auto_scroll = 0u16;
    let (title, lines): (String, Vec<Line>) = match app.previewed() {
        None => (
            " Preview ".into(),
            vec![Line::styled(
                "The selected passage shows here, its cited sentences marked.",
                th.dim(),
            )],
        ),
        Some(Preview::Hit { hit, query }) => {
            let mut lines = vec![
                Line::styled(hit.title.clone().unwrap_or_else(|| hit.path.clone()), bold),
                Line::from(vec![
                    Span::styled(
                        crate::prompt::ocr_mark(
                            crate::prompt::page_range(
                                hit.page_start,
                                hit.page_end,
                                hit.page_label.as_deref(),
                            ),
                            hit.spans.iter().any(|s| s.ocr),
                        ),
                        th.page(),
                    ),
                    Span::styled(format!(" · {}", hit.path), th.dim()),
                ]),
            ];
            if let Some(sec) = &hit.section {
                lines.push(Line::styled(format!("§ {sec}"), th.dim()));
            }
            lines.push(Line::default());
            let marks: Vec<_> = query_terms(&hit.text, query)
                .into_iter()
                .map(|(s, e)| (s, e, th.term()))
                .collect();
            lines.extend(styled(hit.text.trim_end(), &marks, Style::default()));
            (" Preview · o: open the page ".into(), lines)
        }
        Some(Preview::Passage {
            passage,
            query,
            quotes,
        }) => {
            let mut lines = vec![
                Line::styled(format!("[{}] {}", passage.n, passage.title), bold),
                Line::from(vec![
                    Span::styled(passage.pages(), th.page()),
                    Span::styled(format!(" · {}", passage.path), th.dim()),
                ]),
                Line::default(),
            ];
            // Scrolled so the first cited sentence is in view.
            auto_scroll = quotes
                .iter()
                .map(|q| q.0)
                .min()
                .map_or(0, |at| {
                    lines_before(&passage.text, at, r.width.saturating_sub(2))
                })
                .saturating_add(lines.len() as u16);
            if auto_scroll + 2 < r.height.saturating_sub(2) {
                auto_scroll = 0;
            } else {
                auto_scroll = auto_scroll.saturating_sub(2);
            }
            let mut marks: Vec<_> = quotes.iter().map(|&(s, e)| (s, e, th.quote())).collect();
            marks.extend(
                query_terms(&passage.text, query)
                    .into_iter()
                    .map(|(s, e)| (s, e, th.term())),
            );
            lines.extend(styled(passage.text.trim_end(), &marks, Style::default()));
            (
                format!(
                    " Passage [{}]{} · o: open the page ",
                    passage.n,
                    if quotes.is_empty() {
                        ""
                    } else {
                        " · cited sentence marked"
                    }
                ),
                lines,
            )
        }
        Some(Preview::Document(d)) => {
            let mut lines = match &d.title {
                Some(t) => vec![
                    Line::styled(t.clone(), bold),
                    Line::styled(d.path.clone(), th.dim()),
                ],
                None => vec![Line::styled(d.path.clone(), bold)],
            };
            lines.extend([
                Line::default(),
                Line::raw(format!(
                    "{} pages · {} chunks · {} bytes · {:?}",
                    d.pages, d.chunks, d.size, d.status
                )),
            ]);
            if let Some(e) = &d.error {
                lines.push(Line::styled(format!("error: {e}"), th.error()));
            }
            for w in &d.warnings {
                lines.push(Line::styled(format!("warning: {w}"), th.error()));
            }
            (" Document ".into(), lines)
        }
    };
    let para = Paragraph::new(lines).wrap(Wrap { trim: false });
    let shown = usize::from(r.height.saturating_sub(2));
    let total = para.line_count(r.width.saturating_sub(2));
    let max = u16::try_from(total.saturating_sub(shown)).unwrap_or(u16::MAX);
    let scroll = app.preview_scroll.resolve(auto_scroll, max);
    f.render_widget(para.scroll((scroll, 0)).block(pane(title, focused, th)), r);
}

/// Screen lines `text[..at]` takes when wrapped at `width` columns (an
/// estimate: wrapping at words can take a little more).
fn lines_before(text: &str, at: usize, width: u16) -> u16 {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let width = usize::from(width.max(1));
    let parts: Vec<&str> = text[..at].split('\n').collect();
    let full: usize = parts[..parts.len() - 1]
        .iter()
        .map(|l| Line::raw(*l).width().div_ceil(width).max(1))
        .sum();
    let last = Line::raw(parts[parts.len() - 1]).width() / width;
    u16::try_from(full + last).unwrap_or(u16::MAX)
}

fn draw_status_line(f: &mut Frame<'_>, app: &App, th: Theme, r: Rect) {
    let line = match (&app.prompt, &app.status_line) {
        (Some(p), _) => {
            let (label, text) = match p {
                Prompt::Ingest(t) => ("ingest (file or folder): ", t),
                Prompt::Save(t) => ("save the conversation to: ", t),
            };
            f.set_cursor_position((
                r.x + (Line::raw(label).width() + Line::raw(text.as_str()).width()) as u16,
                r.y,
            ));
            Line::from(vec![
                Span::styled(label, Style::default().add_modifier(Modifier::BOLD)),
                Span::raw(text.clone()),
            ])
        }
        (None, Some(m)) if m.error => Line::styled(format!("error: {}", m.text), th.error()),
        (None, Some(m)) => Line::raw(m.text.clone()),
        (None, None) => Line::styled(
            "Enter: ask · /: type · Tab: next pane · d: documents · i: ingest · F1 or ?: keys · Ctrl-Q: quit",
            th.dim(),
        ),
    };
    f.render_widget(Paragraph::new(line), r);
}

/// A text gauge for `done` (0–1): `█████░░░░░ 50%`.
fn progress_bar(done: f64, th: Theme) -> Line<'static> {
    const WIDTH: usize = 30;
    let done = done.clamp(0.0, 1.0);
    let full = (done * WIDTH as f64).round() as usize;
    Line::from(vec![
        Span::styled("█".repeat(full), th.fg(Color::Green)),
        Span::styled("░".repeat(WIDTH - full), th.dim()),
        Span::raw(format!(" {:.0}%", done * 100.0)),
    ])
}

/// `96K` for token counts.
fn kilo(n: usize) -> String {
    if n < 1024 {
        n.to_string()
    } else if n < 10 * 1024 {
        format!("{:.1}K", n as f64 / 1024.0)
    } else {
        format!("{}K", (n as f64 / 1024.0).round())
    }
}

/// `5s`, `3m`, `2h`, `4d`.
fn ago(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m", secs / 60),
        3600..=86_399 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

fn draw_info(f: &mut Frame<'_>, app: &App, th: Theme, r: Rect) {
    let i = &app.info;
    let embedded = if i.chunks == 0 || i.embedded == 0 {
        "no vectors".to_string()
    } else {
        format!(
            "{:.0}% embedded",
            100.0 * i.embedded as f64 / i.chunks as f64
        )
    };
    let watching = i.watch.as_ref().map_or(String::new(), |w| {
        let mut t = format!(
            "watching {} folder{}",
            w.folders,
            if w.folders == 1 { "" } else { "s" }
        );
        if w.pending > 0 {
            t.push_str(&format!(", {} pending", w.pending));
        }
        if let Some(secs) = w.last_change_secs {
            t.push_str(&format!(", changed {} ago", ago(secs)));
        }
        t + " · "
    });
    let left = format!(
        " {} docs · {} chunks · {embedded} · {watching}{} · {} ",
        i.documents, i.chunks, i.mode, i.backend
    );
    let used = app
        .answer
        .as_ref()
        .and_then(|a| a.answer.as_ref())
        .map_or(0, |a| a.tokens);
    let label = match &i.loading {
        Some(l) => l.clone(),
        None if i.window_why.is_empty() => format!("ctx {} / {}", kilo(used), kilo(i.window)),
        None => format!("ctx {} / {} ({})", kilo(used), kilo(i.window), i.window_why),
    };
    let gauge_width = (Line::raw(label.as_str()).width() as u16 + 12).min(r.width / 2);
    let cols = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Min(10), Constraint::Length(gauge_width)])
        .split(r);
    f.render_widget(Paragraph::new(Line::styled(left, th.dim())), cols[0]);
    let ratio = if i.window == 0 {
        0.0
    } else {
        (used as f64 / i.window as f64).clamp(0.0, 1.0)
    };
    f.render_widget(
        Gauge::default()
            .gauge_style(th.fg(Color::Green))
            .ratio(ratio)
            .label(label),
        cols[1],
    );
}

const KEYS: &[(&str, &str)] = &[
    ("typing", "search as you type (in the query line)"),
    ("Enter", "ask (a follow-up keeps the conversation)"),
    ("Tab / Shift-Tab", "next / previous pane"),
    ("Esc", "stop the answer; leave the query line"),
    ("/", "back to the query line"),
    (
        "↑↓ j k, PgUp PgDn",
        "move or scroll; the mouse wheel scrolls",
    ),
    ("1–9", "show passage [n] (or result n)"),
    ("] [  n N", "next / previous cited passage"),
    ("r  c", "show results / the answer's sources"),
    ("o", "open the PDF at the page (SHIRABE_VIEWER, zathura, …)"),
    ("y", "copy the answer with its sources"),
    ("w", "save the conversation as Markdown"),
    ("d", "documents: pages, status, errors"),
    (
        "s  m",
        "summarize the selected document (m: as meeting minutes)",
    ),
    (
        "p",
        "pin or unpin the selected document: questions read it whole",
    ),
    (
        "i",
        "ingest a file or folder in the background (or hand it to a watcher)",
    ),
    ("? F1", "this help (any key closes it)"),
    ("q  Ctrl-Q", "quit (Ctrl-C stops an answer, else quits)"),
];

fn draw_help(f: &mut Frame<'_>, th: Theme) {
    let area = f.area();
    let w = 80.min(area.width);
    let h = (KEYS.len() as u16 + 2).min(area.height);
    let r = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    let lines: Vec<Line> = KEYS
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(
                    format!("{k:>17}  "),
                    th.cite().remove_modifier(Modifier::UNDERLINED),
                ),
                Span::raw(*what),
            ])
        })
        .collect();
    f.render_widget(Clear, r);
    f.render_widget(Paragraph::new(lines).block(pane(" Keys ", true, th)), r);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::app::{Action, Report};
    use crate::tui::{Answer, Info};
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;
    use std::time::Instant;

    fn info() -> Info {
        Info {
            documents: 6,
            chunks: 42,
            embedded: 0,
            mode: "bm25".into(),
            backend: "extractive".into(),
            window: 131_072,
            ..Info::default()
        }
    }

    /// The screen drawn at the moment the answer started (so a running
    /// answer shows 0.0 s), or now when there is none.
    fn screen(app: &mut App, w: u16, h: u16) -> String {
        let now = app.answer.as_ref().map_or_else(Instant::now, |v| v.started);
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| draw(f, app, now)).unwrap();
        let buf = t.backend().buffer().clone();
        let mut s = String::new();
        for y in 0..buf.area.height {
            let mut line = String::new();
            for x in 0..buf.area.width {
                line.push_str(buf[(x, y)].symbol());
            }
            s.push_str(line.trim_end());
            s.push('\n');
        }
        s
    }

    fn hit(n: u32, path: &str, text: &str) -> crate::retrieve::Hit {
        let words: HashSet<String> = ["budget", "osaka"].iter().map(|s| s.to_string()).collect();
        let sn = crate::retrieve::snippet(text, &words);
        crate::retrieve::Hit {
            ocr: false,
            path: path.into(),
            title: Some(format!("Minutes {n}")),
            section: None,
            page_start: n,
            page_end: n,
            page: n,
            page_label: Some(format!("{}", n + 10)),
            chunk_id: format!("{path}#{n}"),
            score: 1.0 / n as f32,
            text: text.into(),
            snippet: sn.text,
            highlights: sn.highlights,
            explain: Default::default(),
            neighbors: vec![],
            spans: vec![],
        }
    }

    fn typed(app: &mut App, s: &str, t: Instant) {
        for c in s.chars() {
            app.on_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE), t);
        }
    }

    /// Presses Enter; the answer's sequence number.
    fn ask(app: &mut App, t: Instant) -> u64 {
        match app
            .on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE), t)
            .as_slice()
        {
            [Action::Ask { seq, .. }] => *seq,
            other => panic!("{other:?}"),
        }
    }

    fn with_results() -> App {
        let t = Instant::now();
        let mut app = App::new(info(), false);
        typed(&mut app, "Osaka budget", t);
        let Some(Action::Search { seq, .. }) = app.tick(t + crate::tui::app::DEBOUNCE) else {
            panic!("no search")
        };
        app.on_report(Report::Results {
            seq,
            query: "Osaka budget".into(),
            hits: vec![
                hit(3, "minutes/2024-03.pdf", "The board approved the Osaka warehouse expansion.\nThe budget is 1.8 million euros, spread over two years."),
                hit(7, "reports/q2.pdf", "Osaka logistics costs rose by 4% in the second quarter."),
            ],
        });
        app
    }

    fn passages() -> Vec<crate::prompt::Passage> {
        vec![
            crate::prompt::Passage {
                n: 1,
                path: "minutes/2024-03.pdf".into(),
                title: "Board minutes, March 2024".into(),
                page_start: 3,
                page_end: 3,
                page_label: Some("1".into()),
                text: "The board approved the Osaka warehouse expansion.\nThe budget is 1.8 million euros, spread over two years.".into(),
                chunk_ids: vec!["a".into()],
                page_map: Vec::new(),
                rank: 1,
            },
            crate::prompt::Passage {
                n: 2,
                path: "reports/q2.pdf".into(),
                title: "Q2 report".into(),
                page_start: 7,
                page_end: 8,
                page_label: None,
                text: "Osaka logistics costs rose by 4% in the second quarter.".into(),
                chunk_ids: vec!["b".into()],
                page_map: Vec::new(),
                rank: 2,
            },
        ]
    }

    #[test]
    fn empty_index() {
        let mut app = App::new(
            Info {
                documents: 0,
                chunks: 0,
                ..info()
            },
            false,
        );
        insta::assert_snapshot!(screen(&mut app, 100, 24));
    }

    #[test]
    fn status_bar_with_a_watcher() {
        let mut app = with_results();
        app.info.watch = Some(crate::tui::WatchInfo {
            folders: 2,
            pending: 3,
            last_change_secs: Some(75),
        });
        let s = screen(&mut app, 140, 24);
        let bar = s
            .lines()
            .find(|l| l.contains("docs ·"))
            .expect("the status bar");
        insta::assert_snapshot!(bar.trim_end());
    }

    #[test]
    fn results() {
        let mut app = with_results();
        insta::assert_snapshot!(screen(&mut app, 110, 24));
    }

    #[test]
    fn streaming_answer() {
        let t = Instant::now();
        let mut app = with_results();
        let seq = ask(&mut app, t);
        app.on_report(Report::Text {
            seq,
            text: "The Osaka expansion has a budget of 1.8 million euros [1], spread".into(),
        });
        let s = screen(&mut app, 110, 24);
        insta::assert_snapshot!(s);
    }

    /// The title's seconds run from the question to the `now` drawn at,
    /// and the rate shows once eight pieces have come over half a second.
    #[test]
    fn the_answer_title_counts_to_the_moment_drawn() {
        let t = Instant::now();
        let mut app = with_results();
        let seq = ask(&mut app, t);
        for _ in 0..9 {
            app.on_report(Report::Text {
                seq,
                text: "word ".into(),
            });
        }
        let first = app.answer.as_ref().unwrap().first_text.unwrap();
        let now = first + std::time::Duration::from_secs(2);
        let mut term = Terminal::new(TestBackend::new(110, 24)).unwrap();
        term.draw(|f| draw(f, &mut app, now)).unwrap();
        let buf = term.backend().buffer();
        let screen: String = (0..24)
            .flat_map(|y| (0..110).map(move |x| (x, y)))
            .map(|xy| buf[xy].symbol().to_string())
            .collect();
        let secs = now.duration_since(t).as_secs_f64();
        let want = format!("writing… {secs:.1}s · 4 tok/s");
        assert!(screen.contains(&want), "{want} not in {screen}");
    }

    #[test]
    fn phases_while_the_model_loads_and_reads() {
        let t = Instant::now();
        let mut app = App::new(
            Info {
                backend: "qwen2.5-coder-0.5b.gguf".into(),
                window: 0,
                loading: Some("loading qwen2.5-coder-0.5b.gguf… 3 s".into()),
                ..info()
            },
            false,
        );
        app.set_query("Osaka warehouse budget", t);
        let seq = ask(&mut app, t);
        app.on_report(Report::Phase {
            seq,
            text: "loading the model qwen2.5-coder-0.5b.gguf… 3 s".into(),
            progress: None,
        });
        let loading = screen(&mut app, 110, 16);
        insta::assert_snapshot!("phase_loading", loading);
        app.on_report(Report::Info(Info {
            backend: "qwen2.5-coder-0.5b.gguf".into(),
            window: 6_246,
            window_why: "60 s at 102 tok/s".into(),
            ..info()
        }));
        app.on_report(Report::Phase {
            seq,
            text: "reading the prompt: 1,024 / 6,000 tokens · 49 s left".into(),
            progress: Some(1024.0 / 6000.0),
        });
        let reading = screen(&mut app, 110, 16);
        insta::assert_snapshot!("phase_reading", reading);
    }

    #[test]
    fn citation_preview() {
        let t = Instant::now();
        let mut app = with_results();
        let seq = ask(&mut app, t);
        let ps = passages();
        let checked = crate::answer::check(
            "The budget is 1.8 million euros [1]. Costs rose by 4% [2]. The moon is cheese [2].",
            &ps,
        );
        app.on_report(Report::Answered {
            seq,
            answer: Box::new(Answer {
                passages: ps,
                checked,
                tokens: 3_400,
                budget: 8_192,
                extractive: false,
                note: "context: 3,400 / 8,192 tokens, 2 passages from 2 documents".into(),
            }),
        });
        app.on_key(KeyEvent::new(KeyCode::Tab, KeyModifiers::NONE), t);
        app.on_key(KeyEvent::new(KeyCode::Char('2'), KeyModifiers::NONE), t);
        insta::assert_snapshot!(screen(&mut app, 110, 28));
        // Narrow terminals stack the panes.
        insta::assert_snapshot!("citation_preview_narrow", screen(&mut app, 70, 36));
    }

    #[test]
    fn a_long_answer_is_followed_while_it_streams() {
        let t = Instant::now();
        let mut app = with_results();
        let seq = ask(&mut app, t);
        let long: String = (0..400).map(|i| format!("word{i} ")).collect();
        app.on_report(Report::Text {
            seq,
            text: format!("{long}THE-END"),
        });
        let s = screen(&mut app, 110, 24);
        assert!(s.contains("THE-END"), "{s}");
        assert!(!s.contains("word0 "), "{s}");
    }

    #[test]
    fn documents_while_ingesting() {
        use crate::index::manifest::FileRecord;
        let t = Instant::now();
        let mut app = with_results();
        app.on_key(KeyEvent::new(KeyCode::Tab, KeyModifiers::NONE), t);
        app.on_key(KeyEvent::new(KeyCode::Char('d'), KeyModifiers::NONE), t);
        let rec = |path: &str, status, error: Option<&str>| FileRecord {
            path: path.into(),
            hash: String::new(),
            size: 52_311,
            mtime: 0,
            pages: if status == FileStatus::Ok { 12 } else { 0 },
            chunks: if status == FileStatus::Ok { 30 } else { 0 },
            status,
            error: error.map(str::to_string),
            warnings: vec![],
            title: None,
            ocr_pages: 0,
            ocr_pending: 0,
        };
        app.on_report(Report::Documents(Ok(vec![
            rec("minutes/2024-03.pdf", FileStatus::Ok, None),
            rec("scans/letter.pdf", FileStatus::Empty, None),
            rec(
                "old/broken.pdf",
                FileStatus::Failed,
                Some("damaged PDF: no trailer"),
            ),
        ])));
        app.on_key(KeyEvent::new(KeyCode::Char('j'), KeyModifiers::NONE), t);
        app.on_key(KeyEvent::new(KeyCode::Char('j'), KeyModifiers::NONE), t);
        app.on_key(KeyEvent::new(KeyCode::Char('i'), KeyModifiers::NONE), t);
        typed(&mut app, "~/archive", t);
        app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE), t);
        app.on_report(Report::IngestProgress {
            done: 40,
            total: 160,
            current: "archive/2019/q3.pdf".into(),
        });
        insta::assert_snapshot!(screen(&mut app, 100, 22));
    }

    #[test]
    fn a_long_query_scrolls_sideways() {
        let t = Instant::now();
        let mut app = App::new(info(), false);
        let long = "how much did the board of directors approve for the second phase of the Osaka warehouse expansion in November";
        typed(&mut app, long, t);
        let s = screen(&mut app, 60, 12);
        let query_line = s.lines().nth(1).unwrap();
        assert!(query_line.contains("November"), "{s}");
        assert!(query_line.contains('…'), "{s}");
    }

    #[test]
    fn help() {
        let mut app = with_results();
        app.help = true;
        insta::assert_snapshot!(screen(&mut app, 100, 26));
    }

    #[test]
    fn error() {
        let mut app = with_results();
        app.on_report(Report::Note(Err(
            "no viewer found: set SHIRABE_VIEWER, or install zathura or xdg-utils".into(),
        )));
        insta::assert_snapshot!(screen(&mut app, 100, 20));
    }

    #[test]
    fn styles_mark_citations_terms_and_quotes_without_colour() {
        let th = Theme { color: false };
        let lines = styled("ab [1]\ncd", &[(3, 6, th.cite())], Style::default());
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].spans[1].content, "[1]");
        assert!(lines[0].spans[1]
            .style
            .add_modifier
            .contains(Modifier::UNDERLINED));
        assert_eq!(lines[0].spans[1].style.fg, None, "NO_COLOR: no colours");
        // Marks that split a multi-byte character are moved to its start.
        let l = styled("大阪倉庫", &[(1, 7, th.term())], Style::default());
        assert_eq!(
            l[0].spans
                .iter()
                .map(|s| s.content.as_ref())
                .collect::<String>(),
            "大阪倉庫"
        );
        assert_eq!(
            query_terms("The Osaka budget", "budget osaka?"),
            vec![(4, 9), (10, 16)]
        );
        assert_eq!(lines_before("ab\ncdefgh\nxy", 11, 4), 3);
        assert_eq!(lines_before("大阪", 3, 4), 0);
        assert_eq!(kilo(96_412), "94K");
        assert_eq!(kilo(131_072), "128K");
        assert_eq!(kilo(3_400), "3.3K");
    }
}
