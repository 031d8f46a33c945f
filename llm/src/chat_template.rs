//! A GGUF's own chat template (`tokenizer.chat_template`, Jinja) checked against the Gemma 3
//! turn format our prompts are written in ([`crate::chat::conversation_prompt`]).
//!
//! The template is rendered, as transformers and llama.cpp render it, for probe conversations
//! (a system text, images, several turns); the result must be exactly what our own prompt
//! writer gives for the same turns. Our writer stays the one that writes prompts: it is what
//! makes user text unable to become a control token. A template that writes anything else is
//! reported, so the user knows the model was tuned to another format.

use minijinja::{context, Environment, Error, ErrorKind};

use crate::chat::{conversation_prompt, ChatPart, ChatRole};

/// Gemma 3's own chat template (google/gemma-3-4b-it tokenizer_config.json, as MedGemma ships it
/// and llama.cpp copies it into `tokenizer.chat_template`).
pub const GEMMA3_CHAT_TEMPLATE: &str = r#"{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '

' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '

' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '
' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>
' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model
'}}
{%- endif -%}
"#;

/// What a model's own chat template says about our prompts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatTemplateCheck {
    /// The model file carries no chat template.
    Absent,
    /// The template writes exactly Gemma 3's turn format, which our prompts use.
    Gemma,
    /// The template writes something else (or cannot be rendered): what and where.
    Differs(String),
}

/// Work allowed for rendering one probe; Gemma's template needs a few thousand units, and a
/// hostile template cannot loop past it.
const FUEL: u64 = 200_000;

/// Checks `template` against Gemma 3's turn format.
pub fn check(template: &str) -> ChatTemplateCheck {
    for probe in probes() {
        let ours = match conversation_prompt(probe.system, &probe.turns) {
            Ok(prompt) => prompt,
            Err(reason) => return ChatTemplateCheck::Differs(reason),
        };
        let theirs = match render(template, &probe) {
            Ok(text) => text,
            Err(e) => {
                return ChatTemplateCheck::Differs(format!("it cannot be rendered: {e:#}"));
            }
        };
        if theirs != ours {
            let at = ours
                .char_indices()
                .zip(theirs.chars())
                .find(|((_, a), b)| a != b)
                .map(|((i, _), _)| i)
                .unwrap_or(ours.len().min(theirs.len()));
            let near = |text: &str| -> String {
                let mut start = at.saturating_sub(20).min(text.len());
                while !text.is_char_boundary(start) {
                    start -= 1;
                }
                text[start..].chars().take(50).collect()
            };
            return ChatTemplateCheck::Differs(format!(
                "for {}, it writes {:?} where Gemma 3's format has {:?}",
                probe.name,
                near(&theirs),
                near(&ours)
            ));
        }
    }
    ChatTemplateCheck::Gemma
}

struct Probe {
    name: &'static str,
    system: Option<&'static str>,
    turns: Vec<(ChatRole, Vec<ChatPart>)>,
}

fn probes() -> Vec<Probe> {
    let text = |t: &str| ChatPart::Text(t.to_string());
    vec![
        Probe {
            name: "a system text and one turn",
            system: Some("You are a careful clinical scribe."),
            turns: vec![(ChatRole::User, vec![text("  Summarise: BP 142/91.  ")])],
        },
        Probe {
            name: "an image and three turns",
            system: None,
            turns: vec![
                (
                    ChatRole::User,
                    vec![ChatPart::Image, text(" What is shown?\n")],
                ),
                (ChatRole::Model, vec![text("A chest X-ray.")]),
                (ChatRole::User, vec![text("Any effusion?")]),
            ],
        },
    ]
}

/// The probe through the template, with transformers' variables (`messages`, `bos_token`,
/// `add_generation_prompt`) and its `raise_exception`.
fn render(template: &str, probe: &Probe) -> Result<String, Error> {
    let mut env = Environment::new();
    env.set_fuel(Some(FUEL));
    env.add_function("raise_exception", |message: String| -> Result<(), Error> {
        Err(Error::new(ErrorKind::InvalidOperation, message))
    });
    env.add_template("chat", template)?;
    let mut messages = Vec::new();
    if let Some(system) = probe.system {
        messages.push(context! { role => "system", content => system });
    }
    for (role, parts) in &probe.turns {
        let role = match role {
            ChatRole::User => "user",
            ChatRole::Model => "assistant",
        };
        let content: Vec<_> = parts
            .iter()
            .map(|part| match part {
                ChatPart::Text(text) => context! { type => "text", text => text },
                ChatPart::Image => context! { type => "image" },
            })
            .collect();
        // Text-only turns as plain strings, as most callers send them; turns with an image as
        // a list of parts.
        match parts.as_slice() {
            [ChatPart::Text(text)] => messages.push(context! { role, content => text }),
            _ => messages.push(context! { role, content }),
        }
    }
    env.get_template("chat")?.render(context! {
        messages,
        bos_token => "<bos>",
        eos_token => "<eos>",
        add_generation_prompt => true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemma_3s_own_template_writes_our_prompts() {
        assert_eq!(check(GEMMA3_CHAT_TEMPLATE), ChatTemplateCheck::Gemma);
    }

    #[test]
    fn other_formats_and_broken_templates_are_reported() {
        let chatml = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n";
        let ChatTemplateCheck::Differs(why) = check(chatml) else {
            panic!("ChatML passed for Gemma");
        };
        assert!(why.contains("<|im_start|>system"), "{why}");
        // Gemma's format but the system text dropped.
        let dropped =
            GEMMA3_CHAT_TEMPLATE.replace("(first_user_prefix if loop.first else \"\")", "\"\"");
        let ChatTemplateCheck::Differs(why) = check(&dropped) else {
            panic!("a template without the system text passed");
        };
        assert!(why.contains("a system text"), "{why}");
        for broken in [
            "{% for x in messages %}",
            "{{ raise_exception('no') }}",
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
        ] {
            let ChatTemplateCheck::Differs(why) = check(broken) else {
                panic!("{broken} passed");
            };
            assert!(why.starts_with("it cannot be rendered"), "{broken}: {why}");
        }
    }
}
