//! Drawing the dictation screen: status bar, transcript, attachments, letter, footer and the
//! overlays. Usable at 80x24; everything is laid out from the frame's size on every draw, so a
//! resize just redraws.

use medscribe_pipeline::session::clock;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Block, Clear, List, ListItem, ListState, Paragraph};
use ratatui::Frame;

use crate::app::{App, Capture, Focus, LetterPane, Overlay};

const KEYS: &[(&str, &str)] = &[
    ("space", "start / pause recording"),
    ("↑ ↓ PgUp PgDn", "move in the focused pane"),
    ("Tab", "next pane (transcript, attachments, letter)"),
    ("e / Enter", "correct the highlighted segment"),
    ("n", "name the highlighted segment's speaker"),
    ("a", "attach an image (Tab completes the path)"),
    ("d", "remove the highlighted attachment"),
    ("t", "choose the letter template"),
    ("g", "write the letter from the transcript"),
    ("Esc", "stop writing the letter / close a window"),
    ("s", "save the letter (Markdown, JSON, FHIR)"),
    ("?", "this help"),
    ("q", "quit (asks first if a letter is unsaved)"),
];

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, app: &App) {
    let [status, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(6),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    draw_status(frame, app, status);
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(body);
    let attachment_rows = (app.attachments.len().max(1) as u16 + 2).min(7);
    let [attachments, letter] =
        Layout::vertical([Constraint::Length(attachment_rows), Constraint::Min(4)]).areas(right);
    draw_transcript(frame, app, left);
    draw_attachments(frame, app, attachments);
    draw_letter(frame, app, letter);
    draw_footer(frame, app, footer);
    match &app.overlay {
        Overlay::None => {}
        Overlay::Help => draw_help(frame, app),
        Overlay::Templates(row) => draw_templates(frame, app, *row),
        Overlay::Attach(input) => draw_input(
            frame,
            " Attach an image: path (Tab completes, Enter adds) ",
            input,
        ),
        Overlay::Rename(label, input) => draw_input(
            frame,
            &format!(" Name speaker {label} (Enter saves, everywhere) "),
            input,
        ),
        Overlay::ConfirmQuit => {
            let area = popup(frame.area(), 50, 3);
            frame.render_widget(Clear, area);
            frame.render_widget(
                Paragraph::new("The letter is not saved. Quit anyway? (y/n)")
                    .block(Block::bordered().title(" Quit ").red()),
                area,
            );
        }
    }
}

fn draw_status(frame: &mut Frame, app: &App, area: Rect) {
    let (marker, style) = match app.capture {
        Capture::Recording => ("● REC", Style::new().fg(Color::Red).bold()),
        Capture::Paused => ("❚❚ PAUSED", Style::new().fg(Color::Yellow).bold()),
        Capture::Finishing => ("… FINISHING", Style::new().fg(Color::Yellow)),
        Capture::Stopped if app.labelling => ("… SPEAKERS", Style::new().fg(Color::Yellow)),
        Capture::Stopped => ("■ STOPPED", Style::new().fg(Color::DarkGray)),
    };
    let filled = (((app.level_dbfs + 60.0) / 60.0).clamp(0.0, 1.0) * 10.0).round() as usize;
    let meter = format!("{}{}", "█".repeat(filled), "░".repeat(10 - filled));
    let level = if app.level_dbfs <= -99.0 {
        "  -- dB".to_string()
    } else {
        format!("{:>4.0} dB", app.level_dbfs)
    };
    // A file source is shown by its name; long device names are shortened.
    let device = std::path::Path::new(&app.device)
        .file_name()
        .map_or(app.device.clone(), |n| n.to_string_lossy().into_owned());
    let device: String = if device.chars().count() > 24 {
        device.chars().take(23).chain(['…']).collect()
    } else {
        device
    };
    let line = Line::from(vec![
        Span::styled(marker, style),
        Span::raw(format!(" {}  ", clock(app.recorded_s))),
        Span::styled(meter, Style::new().fg(Color::Green)),
        Span::raw(format!("{level}  {device}  ")),
        Span::styled(
            app.template_title().to_owned(),
            Style::new().fg(Color::Cyan),
        ),
    ]);
    frame.render_widget(Paragraph::new(line), area);
}

fn pane(title: &str, focused: bool) -> Block<'static> {
    let block = Block::bordered().title(format!(" {title} "));
    if focused {
        block.border_style(Style::new().fg(Color::Cyan))
    } else {
        block
    }
}

/// Word-wraps `text` to `width` columns (long words are cut).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    for paragraph in text.split('\n') {
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            let mut word: Vec<char> = word.chars().collect();
            loop {
                let used = line.chars().count();
                let room = if used == 0 {
                    width
                } else {
                    width.saturating_sub(used + 1)
                };
                if word.len() <= room {
                    if used > 0 {
                        line.push(' ');
                    }
                    line.extend(word.iter());
                    break;
                }
                if used > 0 {
                    lines.push(std::mem::take(&mut line));
                    continue;
                }
                lines.push(word[..width].iter().collect());
                word.drain(..width);
            }
        }
        lines.push(line);
    }
    lines
}

fn draw_transcript(frame: &mut Frame, app: &App, area: Rect) {
    let focused = app.focus == Focus::Transcript;
    let block = pane("Transcript", focused);
    let inner = block.inner(area);
    let width = inner.width as usize;
    let mut lines: Vec<Line> = Vec::new();
    let mut selected_rows = None;
    let current = app
        .selected
        .or_else(|| app.lines.len().checked_sub(1))
        .filter(|_| focused);
    for (index, segment) in app.lines.iter().enumerate() {
        let stamp = format!(
            "{} {}",
            &clock(segment.start_s)[3..],
            app.speaker_prefix(segment)
        );
        let editing = app.editing.as_ref().filter(|(i, _)| *i == index);
        let text = editing.map_or(segment.text.as_str(), |(_, input)| input.text.as_str());
        let body = wrap(&format!("{stamp}{text}"), width);
        let style = if editing.is_some() {
            Style::new().fg(Color::Black).bg(Color::Yellow)
        } else if current == Some(index) {
            Style::new().add_modifier(Modifier::REVERSED)
        } else {
            Style::new()
        };
        let first = lines.len();
        lines.extend(body.into_iter().map(|l| Line::styled(l, style)));
        if current == Some(index) || editing.is_some() {
            selected_rows = Some((first, lines.len()));
        }
    }
    if let Some(partial) = &app.partial {
        for row in wrap(&format!("…     {partial}"), width) {
            lines.push(Line::styled(
                row,
                Style::new()
                    .fg(Color::DarkGray)
                    .add_modifier(Modifier::ITALIC),
            ));
        }
    }
    if lines.is_empty() {
        let hint = match app.capture {
            Capture::Paused => "Press space and speak.",
            Capture::Recording => "Listening…",
            _ => "Nothing was transcribed.",
        };
        lines.push(Line::styled(hint, Style::new().fg(Color::DarkGray)));
    }
    let height = inner.height as usize;
    // Follow the newest text unless a segment is highlighted; then keep it in view.
    let scroll = match (app.selected, selected_rows) {
        (Some(_), Some((first, end))) if end > height => first
            .min(end.saturating_sub(height))
            .min(lines.len().saturating_sub(height)),
        (Some(_), Some(_)) => 0,
        _ => lines.len().saturating_sub(height),
    };
    frame.render_widget(
        Paragraph::new(Text::from(lines))
            .block(block)
            .scroll((scroll as u16, 0)),
        area,
    );
    if let Some((index, input)) = &app.editing {
        if let Some((first, _)) = selected_rows {
            let line = &app.lines[*index];
            let stamp_len = clock(line.start_s)[3..].chars().count()
                + 1
                + app.speaker_prefix(line).chars().count();
            let offset = stamp_len + input.cursor;
            let row = first + offset / width.max(1);
            if row >= scroll && row < scroll + height {
                frame.set_cursor_position((
                    inner.x + (offset % width.max(1)) as u16,
                    inner.y + (row - scroll) as u16,
                ));
            }
        }
    }
}

fn draw_attachments(frame: &mut Frame, app: &App, area: Rect) {
    let focused = app.focus == Focus::Attachments;
    let block = pane("Attachments", focused);
    if app.attachments.is_empty() {
        frame.render_widget(
            Paragraph::new(Line::styled(
                "none (a attaches an image)",
                Style::new().fg(Color::DarkGray),
            ))
            .block(block),
            area,
        );
        return;
    }
    let items: Vec<ListItem> = app
        .attachments
        .iter()
        .map(|path| {
            ListItem::new(path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ))
        })
        .collect();
    let mut state = ListState::default();
    if focused {
        state.select(Some(app.attachment.min(app.attachments.len() - 1)));
    }
    frame.render_stateful_widget(
        List::new(items)
            .block(block)
            .highlight_style(Style::new().add_modifier(Modifier::REVERSED)),
        area,
        &mut state,
    );
}

fn markdown_lines(markdown: &str, width: usize) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    for source in markdown.lines() {
        if let Some(heading) = source.trim_start().strip_prefix('#') {
            let title = heading.trim_start_matches('#').trim().to_owned();
            lines.push(Line::styled(title, Style::new().bold().fg(Color::Cyan)));
        } else {
            lines.extend(wrap(source, width).into_iter().map(Line::raw));
        }
    }
    lines
}

fn draw_letter(frame: &mut Frame, app: &App, area: Rect) {
    let focused = app.focus == Focus::Letter;
    let title = match &app.letter {
        LetterPane::Writing { .. } => "Letter: writing (Esc stops)".into(),
        LetterPane::Done {
            saved: Some(path), ..
        } => format!(
            "Letter: saved {}",
            path.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ),
        LetterPane::Done { .. } => "Letter: done, s saves".into(),
        _ => "Letter".into(),
    };
    let block = pane(&title, focused);
    let width = block.inner(area).width as usize;
    let height = block.inner(area).height as usize;
    let dim = Style::new().fg(Color::DarkGray);
    let (lines, follow) = match &app.letter {
        LetterPane::Idle => (
            wrap(
                &format!(
                    "g writes a {} from the transcript; t picks another template.",
                    app.template_title().to_lowercase()
                ),
                width,
            )
            .into_iter()
            .map(|l| Line::styled(l, dim))
            .collect(),
            false,
        ),
        LetterPane::Unavailable(reason) => (
            wrap(&format!("Letters are not available: {reason}"), width)
                .into_iter()
                .map(|l| Line::styled(l, dim))
                .collect(),
            false,
        ),
        LetterPane::Writing { status, text } => {
            let mut lines = vec![Line::styled(format!("({status})"), dim)];
            lines.extend(markdown_lines(text, width));
            (lines, true)
        }
        LetterPane::Done { letter, .. } => {
            // What the guards removed is the first thing the doctor sees, highlighted: the draft
            // is shorter than what the model wrote, and why must not be missed.
            let alert = Style::new().fg(Color::Black).bg(Color::Yellow).bold();
            let mut lines: Vec<Line> = letter
                .warnings
                .iter()
                .flat_map(|w| wrap(&format!("! {w}"), width))
                .map(|l| Line::styled(l, alert))
                .collect();
            lines.extend(markdown_lines(&letter.markdown, width));
            (lines, false)
        }
        LetterPane::Failed(reason) => (
            wrap(&format!("The letter failed: {reason}"), width)
                .into_iter()
                .map(|l| Line::styled(l, Style::new().fg(Color::Red)))
                .collect(),
            false,
        ),
    };
    let scroll = if follow {
        lines.len().saturating_sub(height) as u16
    } else {
        app.letter_scroll
            .min(lines.len().saturating_sub(height) as u16)
    };
    frame.render_widget(
        Paragraph::new(Text::from(lines))
            .block(block)
            .scroll((scroll, 0)),
        area,
    );
}

fn draw_footer(frame: &mut Frame, app: &App, area: Rect) {
    let line = match &app.message {
        Some(message) => Line::styled(message.clone(), Style::new().fg(Color::Yellow)),
        None if app.editing.is_some() => Line::styled(
            "Enter keeps the correction, Esc drops it",
            Style::new().fg(Color::DarkGray),
        ),
        None => Line::styled(
            "space rec/pause  e edit  a attach  t template  g letter  s save  ? help  q quit",
            Style::new().fg(Color::DarkGray),
        ),
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// A centred rectangle of at most `width` x `height` cells.
fn popup(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    }
}

/// A one-line input in a window, with its cursor.
fn draw_input(frame: &mut Frame, title: &str, input: &crate::app::LineInput) {
    let area = popup(frame.area(), 70, 3);
    frame.render_widget(Clear, area);
    let block = Block::bordered().title(title.to_owned());
    let inner = block.inner(area);
    frame.render_widget(Paragraph::new(input.text.as_str()).block(block), area);
    let visible = input.cursor.min(inner.width.saturating_sub(1) as usize) as u16;
    frame.set_cursor_position((inner.x + visible, inner.y));
}

fn draw_help(frame: &mut Frame, app: &App) {
    let area = popup(frame.area(), 66, KEYS.len() as u16 + 4);
    frame.render_widget(Clear, area);
    let mut lines: Vec<Line> = KEYS
        .iter()
        .map(|(key, what)| {
            Line::from(vec![
                Span::styled(format!("{key:>14}  "), Style::new().bold()),
                Span::raw(*what),
            ])
        })
        .collect();
    lines.push(Line::styled(
        format!("session: {}", app.session),
        Style::new().fg(Color::DarkGray),
    ));
    frame.render_widget(
        Paragraph::new(Text::from(lines)).block(Block::bordered().title(" Keys (any key closes) ")),
        area,
    );
}

fn draw_templates(frame: &mut Frame, app: &App, row: usize) {
    let area = popup(frame.area(), 44, app.templates.len() as u16 + 2);
    frame.render_widget(Clear, area);
    let items: Vec<ListItem> = app
        .templates
        .iter()
        .map(|t| ListItem::new(t.title.clone()))
        .collect();
    let mut state = ListState::default();
    state.select(Some(row));
    frame.render_stateful_widget(
        List::new(items)
            .block(Block::bordered().title(" Template (Enter picks) "))
            .highlight_style(Style::new().add_modifier(Modifier::REVERSED)),
        area,
        &mut state,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_breaks_at_words_and_cuts_long_ones() {
        assert_eq!(wrap("one two three", 7), vec!["one two", "three"]);
        assert_eq!(wrap("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        assert_eq!(wrap("a\n\nb", 10), vec!["a", "", "b"]);
        assert_eq!(wrap("", 5), vec![""]);
        assert_eq!(wrap("x", 0), vec!["x"]);
    }
}
