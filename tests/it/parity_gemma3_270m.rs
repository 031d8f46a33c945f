//! The default letter model with real weights (Gemma 3 270M Q4_K_M GGUF, installed by setup)
//! against an independent reference: transformers loading the same GGUF dequantised to float32
//! (models/scripts/make_gemma3_270m_reference.py; only token ids are stored).

use crate::common;

use common::*;
use medscribe_llm::{Device, Gemma3Text, GemmaTokenizer, GgufWeights};
use medscribe_pipeline::{models, DataDir};

fn reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("gemma3-270m-expected.json")).unwrap())
        .unwrap()
}

fn continuation(model: &mut Gemma3Text, prompt: &[u32], steps: usize) -> Vec<u32> {
    model.reset();
    greedy(model, prompt, steps)
}

/// Largest difference between two models' logits at the last position of `prompt`, both models
/// starting a new conversation.
fn last_logits_diff(a: &mut Gemma3Text, b: &mut Gemma3Text, prompt: &[u32]) -> f32 {
    let last = |model: &mut Gemma3Text| -> Vec<f32> {
        model.reset();
        model
            .forward(prompt, false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let (x, y) = (last(a), last(b));
    x.iter()
        .zip(&y)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0f32, f32::max)
}

#[test]
fn dequantised_weights_continue_exactly_like_the_reference() {
    if !common::slow_tier() {
        return;
    }
    let path = models::default_llm_model(&DataDir::from_env());
    let tokenizer = GemmaTokenizer::load(&path.with_file_name("tokenizer.json"))
        .expect("setup installs the tokenizer");
    let mut model = Gemma3Text::load_gguf_with(&path, &Device::Cpu, GgufWeights::Dequantized)
        .expect("setup installs the GGUF");
    let reference = reference();
    let steps = reference["steps"].as_u64().unwrap() as usize;
    for prompt in reference["prompts"].as_array().unwrap() {
        let text = prompt["text"].as_str().unwrap();
        assert_eq!(
            tokenizer.encode(text).unwrap(),
            ids(&prompt["ids"]),
            "{text:?}"
        );
        assert_eq!(
            continuation(&mut model, &ids(&prompt["ids"]), steps),
            ids(&prompt["greedy"]),
            "{text:?}"
        );
    }
}

#[test]
fn quantized_kernels_stay_close_to_float_arithmetic() {
    if !common::slow_tier() {
        return;
    }
    // candle's quantized matmuls round activations to 8 bits (as llama.cpp's do), which moves
    // this model's logits by up to about 1.0 (spread about 40) from float arithmetic on the same
    // weights. Required: logits within 2.0 of the dequantised model at every prompt's last
    // position, and greedy tokens equal to the float reference at least until its top-1/top-2
    // margin first falls below that measured noise (1.0).
    let path = models::default_llm_model(&DataDir::from_env());
    let mut quantized = Gemma3Text::load_gguf(&path, &Device::Cpu).unwrap();
    let mut float =
        Gemma3Text::load_gguf_with(&path, &Device::Cpu, GgufWeights::Dequantized).unwrap();
    let reference = reference();
    let steps = reference["steps"].as_u64().unwrap() as usize;
    for prompt in reference["prompts"].as_array().unwrap() {
        let text = prompt["text"].as_str().unwrap();
        let prompt_ids = ids(&prompt["ids"]);
        let max_diff = last_logits_diff(&mut quantized, &mut float, &prompt_ids);
        let ours = continuation(&mut quantized, &prompt_ids, steps);
        let expected = ids(&prompt["greedy"]);
        let agree = ours
            .iter()
            .zip(&expected)
            .take_while(|(a, b)| a == b)
            .count();
        let first_close_call = prompt["margins"]
            .as_array()
            .unwrap()
            .iter()
            .position(|m| m.as_f64().unwrap() < 1.0)
            .unwrap_or(steps);
        eprintln!("{text:?}: max logit diff {max_diff:.3}; first {agree} of {steps} tokens agree (first close call at {first_close_call})");
        assert!(
            max_diff <= 2.0,
            "{text:?}: quantized logits {max_diff} from float"
        );
        assert!(
            agree >= first_close_call,
            "{text:?}: parted after {agree} tokens, before the close call at {first_close_call}"
        );
    }
}

#[test]
fn long_prompts_on_the_quantized_kernels() {
    if !common::slow_tier() {
        return;
    }
    // A long prompt runs every matrix on the tiled quantized kernels (several prompt positions per
    // pass over the weights); one token at a time runs the single-row kernels. Both must stay
    // within the quantization noise of float arithmetic, as short prompts do above. (They do not
    // equal each other to f32 rounding: the float model's two orders differ by about 2e-5, and
    // that moves some activations across an 8-bit rounding step, which shows up as about 1.0.)
    let path = models::default_llm_model(&DataDir::from_env());
    let tokenizer = GemmaTokenizer::load(&path.with_file_name("tokenizer.json")).unwrap();
    let text = format!(
        "<bos>{}",
        "The patient was reviewed on the ward round today and remains stable. ".repeat(8)
    );
    let prompt = tokenizer.encode(&text).unwrap();
    assert!(prompt.len() >= 64, "{} tokens", prompt.len());
    let mut quantized = Gemma3Text::load_gguf(&path, &Device::Cpu).unwrap();
    let mut float =
        Gemma3Text::load_gguf_with(&path, &Device::Cpu, GgufWeights::Dequantized).unwrap();
    let at_once = last_logits_diff(&mut quantized, &mut float, &prompt);

    float.reset();
    let reference: Vec<f32> = float
        .forward(&prompt, false)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    quantized.reset();
    let mut last = None;
    for &id in &prompt {
        last = Some(quantized.forward(&[id], false).unwrap());
    }
    let one_by_one: Vec<f32> = last.unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let token_by_token = one_by_one
        .iter()
        .zip(&reference)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0f32, f32::max);
    eprintln!(
        "long prompt ({} tokens): max logit diff from float {at_once:.4} at once, {token_by_token:.4} one token at a time",
        prompt.len()
    );
    assert!(
        at_once <= 2.0,
        "at once: max logit diff {at_once} from float"
    );
    assert!(
        token_by_token <= 2.0,
        "one token at a time: max logit diff {token_by_token} from float"
    );
}

#[test]
fn our_tokenizer_reader_builds_what_tokenizers_builds() {
    if !common::slow_tier() {
        return;
    }
    // The letter model's tokenizer.json is read by our typed reader (llm/src/tokenizer_file.rs);
    // it must give exactly the tokenizer that `tokenizers`' own reader gives.
    let path = models::default_llm_model(&DataDir::from_env()).with_file_name("tokenizer.json");
    let ours = GemmaTokenizer::load(&path).unwrap();
    let ours = ours.as_tokenizers();
    let theirs = tokenizers::Tokenizer::from_file(&path).unwrap();
    assert_eq!(ours.get_vocab(true), theirs.get_vocab(true));
    assert_eq!(
        ours.get_added_tokens_decoder(),
        theirs.get_added_tokens_decoder()
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut texts = vec![
        std::fs::read_to_string(root.join("README.md")).unwrap(),
        "<bos><start_of_turn>user\nBP 142/91  \t\tHbA1c 7.2%\n\n\n<end_of_turn>\n<start_of_turn>model\n"
            .to_string(),
        "Café, naïve, 胸痛, 🫀 ECG — «ST↑» <unused3> <image_soft_token>   trailing  ".to_string(),
        String::new(),
    ];
    for entry in std::fs::read_dir(root.join("llm/templates")).unwrap() {
        texts.push(std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    for text in &texts {
        for special in [false, true] {
            let (a, b) = (
                ours.encode(text.as_str(), special).unwrap(),
                theirs.encode(text.as_str(), special).unwrap(),
            );
            assert_eq!(a.get_ids(), b.get_ids(), "{special}: {text:.60}");
            assert_eq!(a.get_offsets(), b.get_offsets());
            assert_eq!(
                ours.decode(a.get_ids(), true).unwrap(),
                theirs.decode(b.get_ids(), true).unwrap()
            );
        }
    }
}

#[test]
fn a_gguf_rebuilds_the_tokenizer_of_its_tokenizer_json() {
    // The default GGUF's own metadata (tokenizer.ggml.*) against the model's tokenizer.json, read
    // by `tokenizers` itself: the same pieces at the same ids, the same added tokens, and the same
    // ids and offsets for every text.
    let path = models::default_llm_model(&DataDir::from_env());
    let ours = GemmaTokenizer::from_gguf(&path).expect("setup installs the GGUF");
    let theirs = tokenizers::Tokenizer::from_file(path.with_file_name("tokenizer.json")).unwrap();
    // This GGUF is a text model: llama.cpp's converter keeps its 262,144 embedding rows, so the
    // image token tokenizer.json adds after them is not in it (a multimodal GGUF has it as its
    // 262,145th token).
    let mut their_vocab = theirs.get_vocab(true);
    assert_eq!(their_vocab.remove("<image_soft_token>"), Some(262_144));
    let our_vocab = ours.as_tokenizers().get_vocab(true);
    let differing: Vec<_> = their_vocab
        .iter()
        .filter(|(piece, id)| our_vocab.get(*piece) != Some(id))
        .take(5)
        .collect();
    assert!(differing.is_empty(), "pieces at other ids: {differing:?}");
    assert_eq!(our_vocab.len(), their_vocab.len());
    let added = |t: &tokenizers::Tokenizer| -> Vec<(u32, String)> {
        let mut added: Vec<_> = t
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(id, _)| *id < 262_144)
            .map(|(id, token)| (id, token.content))
            .collect();
        added.sort();
        added
    };
    assert_eq!(added(ours.as_tokenizers()), added(&theirs));
    // The pieces constrained JSON is built from.
    let json_tokenizer = GemmaTokenizer::load(&path.with_file_name("tokenizer.json")).unwrap();
    let (mine, reference) = (ours.text_pieces(), json_tokenizer.text_pieces());
    assert_eq!(mine[..], reference[..mine.len()]);
    assert_eq!(ours.bos, json_tokenizer.bos);
    assert_eq!(ours.end_of_turn, json_tokenizer.end_of_turn);

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut texts = vec![
        std::fs::read_to_string(root.join("README.md")).unwrap(),
        String::new(),
        // Accents, other scripts, digits.
        "Café, naïve, Ångström, Müller-Lüdenscheidt, Ærø, ça, señor, Dvořák, Łódź".into(),
        "胸痛 患者 心電図; Боль в груди; ألم في الصدر; दर्द; 가슴 통증; ΗΚΓ".into(),
        "BP 142/91 mmHg, HbA1c 7.2%, 0.125 mg, 1,000,000 IU, 3.14159265358979, -40°C, 1e-6, ½ ¾".into(),
        // Whitespace runs the vocabulary has whole tokens for, and longer ones it does not.
        format!(
            "a{}b{}c{}d\r\ne\u{a0}f\u{2003}g\u{3000}h",
            " ".repeat(40),
            "\t".repeat(33),
            "\n".repeat(35)
        ),
        "  leading and trailing  \n \n\t \t".into(),
        // Emoji: single, with variation selectors, ZWJ sequences, flags, skin tones.
        "🫀 ❤️ 👩‍⚕️ 👨🏽‍🔬 🇬🇧🇩🇪 🏳️‍🌈 ☃︎ 🧑🏿‍🦽".into(),
        // Special-token look-alikes, whole and broken, and SentencePiece's own marks.
        "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n<eos><pad><unk><mask>".into(),
        "<start_of_turn <start_of_turn> < bos> <BOS> <b>bold</b> <td>x</td> <unused3> <unused99999> \
         [PAD5] [multimodal] <start_of_image><end_of_image> <0x0A> ▁▁ ▁x <|im_start|>"
            .into(),
        // Characters only byte fallback can spell.
        "\u{E000}\u{10FFFD}\u{1F8FF}\u{0} \u{7f} 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ꙮ".into(),
    ];
    for entry in std::fs::read_dir(root.join("llm/templates")).unwrap() {
        texts.push(std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    for text in &texts {
        for special in [false, true] {
            let (a, b) = (
                ours.as_tokenizers().encode(text.as_str(), special).unwrap(),
                theirs.encode(text.as_str(), special).unwrap(),
            );
            assert_eq!(a.get_ids(), b.get_ids(), "{special}: {text:.60}");
            assert_eq!(a.get_offsets(), b.get_offsets(), "{text:.60}");
            assert_eq!(
                ours.as_tokenizers().decode(a.get_ids(), false).unwrap(),
                theirs.decode(b.get_ids(), false).unwrap()
            );
        }
        assert_eq!(
            ours.encode(text).unwrap(),
            json_tokenizer.encode(text).unwrap()
        );
    }
}
