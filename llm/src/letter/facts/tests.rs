use super::*;

fn lexicon() -> DrugLexicon {
    DrugLexicon::from_names([
        "amlodipine",
        "aspirin",
        "metformin",
        "lisinopril",
        "atorvastatin",
        "ibuprofen",
    ])
}

/// (transcript, section, expected section after the guard, kinds removed)
fn check(transcript: &str, section: &str, expected: &str, removed: &[FactKind]) {
    let lexicon = lexicon();
    let facts = TranscriptFacts::new(transcript, Some(&lexicon));
    let (text, unsupported) = guard(section, &facts, Some(&lexicon));
    let kinds: Vec<FactKind> = unsupported.iter().map(|u| u.kind).collect();
    assert_eq!(text, expected, "{section:?} against {transcript:?}");
    assert_eq!(kinds, removed, "{section:?}: {unsupported:?}");
}

const REFERRAL: &str = "Referral to cardiology. Mister Jones is a sixty two year old man with \
    exertional chest pain for three weeks. He has high blood pressure and takes amlodipine \
    five milligrams daily. His electrocardiogram shows no acute changes. Please assess for \
    stable angina.";

#[test]
fn the_samples_invented_facts_are_removed_and_dictated_ones_kept() {
    // What the 270M model wrote for samples/referral-dictation.wav (issue 12).
    check(
        REFERRAL,
        "Known hypertension (150/90). Amlodipine 5 mg daily.",
        "Amlodipine 5 mg daily.",
        &[FactKind::BloodPressure],
    );
    check(
        REFERRAL,
        "Blood pressure 150 over 90, heart sounds normal. ECG: sinus rhythm.",
        "Heart sounds normal. ECG: sinus rhythm.",
        &[FactKind::BloodPressure],
    );
    check(
        REFERRAL,
        "Amlodipine 5 mg daily; aspirin (newly started).",
        "Amlodipine 5 mg daily.",
        &[FactKind::Medication],
    );
    check(REFERRAL, "Aspirin started.", "", &[FactKind::Medication]);
    check(
        REFERRAL,
        "62-year-old man with exertional chest pain for three weeks.",
        "62-year-old man with exertional chest pain for three weeks.",
        &[],
    );
    check(
        REFERRAL,
        "58-year-old man. Chest pain for 3 weeks.",
        "Chest pain for 3 weeks.",
        &[FactKind::Number],
    );
}

#[test]
fn spoken_forms_support_written_ones() {
    let cases: &[(&str, &str)] = &[
        ("blood pressure one fifty over ninety", "BP 150/90."),
        (
            "blood pressure one hundred and fifty over ninety",
            "BP 150/90 mmHg.",
        ),
        ("she takes five milligrams", "5 mg."),
        ("a sixty two year old woman", "62-year-old woman."),
        (
            "temperature thirty eight point four",
            "Temperature 38.4 degrees.",
        ),
        (
            "metformin five hundred milligrams twice a day",
            "Metformin 500 mg BID.",
        ),
        (
            "lisinopril ten mg two times daily",
            "Lisinopril 10 mg twice daily.",
        ),
        ("ibuprofen every six hours as needed", "Ibuprofen q6h PRN."),
        ("pain in the left knee", "Left knee pain."),
        (
            "a one thousand two hundred calorie diet",
            "1,200 calorie diet.",
        ),
        ("heart rate of seventy two", "HR 72 bpm."),
        ("atorvastatin at night", "Atorvastatin nocte."),
        ("saturation ninety eight percent", "SpO2 98%."),
    ];
    for (transcript, section) in cases {
        check(transcript, section, section, &[]);
    }
}

#[test]
fn what_was_not_said_is_removed_with_its_clause() {
    check(
        "metformin five hundred milligrams twice a day",
        "Metformin 500 mg three times a day.",
        "",
        &[FactKind::Frequency],
    );
    check(
        "metformin five hundred milligrams twice a day",
        "Metformin 850 mg BID.",
        "",
        &[FactKind::Number],
    );
    check(
        "pain in the left knee",
        "Right knee pain, worse on stairs.",
        "Worse on stairs.",
        &[FactKind::Laterality],
    );
    check(
        "the cough started five days ago",
        "Cough for 5 weeks.",
        "",
        &[FactKind::Number],
    );
    check(
        "the cough started five days ago",
        "Cough for 5 days. Temperature 38.4, pulse 110. Plan: review.",
        "Cough for 5 days. Plan: review.",
        &[FactKind::Number, FactKind::Number],
    );
    // A number glued to a word is still a number (a letter server's model wrote "patient1,
    // patient2, ..."); names with digits are not numbers.
    check(
        "the patient has a cough",
        "Patients: patient1, patient2. The cough.",
        "The cough.",
        &[FactKind::Number, FactKind::Number],
    );
    check(
        "covid 19 swab was negative, SpO2 ninety eight percent, BRCA1 carrier",
        "Covid19 swab negative. SpO2 98%. BRCA1 carrier.",
        "Covid19 swab negative. SpO2 98%. BRCA1 carrier.",
        &[],
    );
    // Dates and record numbers are left to identifier grounding.
    check(
        "seen today",
        "Seen on 12/01/2025.",
        "Seen on 12/01/2025.",
        &[],
    );
}

#[test]
fn spoken_numbers_read_as_clinicians_say_them() {
    let read = |text: &str, hundreds: bool| {
        let words: Vec<&str> = text.split(' ').collect();
        spoken_number(&words, 0, hundreds).map(|(v, _)| v)
    };
    assert_eq!(read("sixty two", false), Some(62.0));
    assert_eq!(read("one fifty", true), Some(150.0));
    assert_eq!(read("one twenty five", true), Some(125.0));
    assert_eq!(read("one fifty", false), Some(1.0));
    assert_eq!(read("two thousand and five", false), Some(2005.0));
    assert_eq!(read("thirty eight point four", false), Some(38.4));
    assert_eq!(read("one hundred and twenty", false), Some(120.0));
    assert_eq!(read("a hundred", false), None);
    assert_eq!(read("twelve", true), Some(12.0));
}

#[test]
fn drug_names_split_by_the_speech_model_are_mended_only_when_unambiguous() {
    let lexicon = DrugLexicon::from_names(["amlodipine", "amiodarone", "metformin", "metoprolol"]);
    let (text, corrections) =
        lexicon.correct("He takes amla-depine 5 mg daily and met-formin; a well-known drug.");
    assert_eq!(
        text,
        "He takes amlodipine 5 mg daily and metformin; a well-known drug."
    );
    assert_eq!(corrections.len(), 2);
    // Too far from any name, or plain words: left alone.
    for text in [
        "a follow-up visit",
        "x-ray of the chest",
        "amlo-darone-ish",
        "amlodipine",
    ] {
        assert_eq!(lexicon.correct(text).0, text);
    }
}

#[test]
fn lexicon_files_skip_comments_and_columns() {
    let dir = std::env::temp_dir().join(format!("medscribe-lexicon-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("drugs.tsv");
    std::fs::write(
        &path,
        "# comment\nAMLODIPINE\tamlodipine\nnorvasc\tamlodipine\n",
    )
    .unwrap();
    let lexicon = DrugLexicon::load(&path).unwrap();
    assert_eq!(lexicon.len(), 2);
    assert!(lexicon.contains("norvasc") && lexicon.contains("amlodipine"));
    std::fs::write(&path, "# nothing\n").unwrap();
    assert!(DrugLexicon::load(&path).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}
