//! Batch transcription of files and folders: inputs expanded recursively to `*.wav`, each file
//! processed on its own (a bad file is reported and the batch goes on), outputs written
//! atomically so an interrupted batch resumes where it stopped (existing outputs are skipped
//! unless forced).

use std::path::{Path, PathBuf};

use crate::error::{PipelineError, Result};
use crate::job::{correct_transcript, FileTranscript, TextCorrector};
use crate::output::write_private_atomically;
use crate::render::{render, TranscriptFormat};
use crate::speakers::Speakers;
use crate::speech::Speech;
use crate::wav::WavSource;

/// What to transcribe and where the results go.
#[derive(Debug, Clone)]
pub struct BatchRequest {
    /// Files and folders (folders are searched recursively for `*.wav`).
    pub inputs: Vec<PathBuf>,
    /// Where output files go; `None` hands results to the caller only.
    pub output_dir: Option<PathBuf>,
    /// Output formats (one file each per recording).
    pub formats: Vec<TranscriptFormat>,
    /// Redo recordings whose outputs exist.
    pub force: bool,
    /// What mends transcripts (medication names, [`TextCorrector`]); `None` leaves them as the
    /// speech model wrote them.
    pub corrector: Option<std::sync::Arc<dyn TextCorrector>>,
}

/// A recording to transcribe and its output name (relative, without extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchInput {
    /// The WAV file.
    pub path: PathBuf,
    /// Output name: the path below the folder it was found in, or the file stem.
    pub output_stem: PathBuf,
}

/// What happens during a batch, for progress display and printing.
#[derive(Debug)]
pub enum BatchEvent<'a> {
    /// The batch starts: number of files and total audio seconds (from their headers).
    Started {
        /// Recordings found.
        files: usize,
        /// Their total length, seconds.
        audio_s: f64,
    },
    /// A file starts (index from 0).
    FileStarted {
        /// Position in the batch.
        index: usize,
        /// The recording.
        path: &'a Path,
    },
    /// Progress inside the current file: (seconds done, seconds in the file).
    Progress {
        /// Audio seconds done.
        done_s: f64,
        /// Audio seconds in the file.
        total_s: f64,
    },
    /// A file is done; `outputs` are the files written (empty without an output folder).
    FileDone {
        /// The result.
        result: &'a FileTranscript,
        /// Files written.
        outputs: &'a [PathBuf],
    },
    /// A file was skipped because its outputs exist.
    Skipped {
        /// The recording.
        path: &'a Path,
    },
    /// A file or input failed; the batch goes on.
    Failed {
        /// The input.
        path: &'a Path,
        /// Why.
        error: &'a PipelineError,
    },
}

/// Totals of a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BatchSummary {
    /// Files transcribed.
    pub transcribed: usize,
    /// Files skipped (outputs existed).
    pub skipped: usize,
    /// Files or inputs that failed.
    pub failed: usize,
    /// Audio transcribed, seconds.
    pub audio_s: f64,
    /// Wall time spent transcribing, seconds.
    pub processing_s: f64,
}

impl BatchSummary {
    /// Real-time factor: processing time / audio time.
    pub fn real_time_factor(&self) -> f64 {
        if self.audio_s > 0.0 {
            self.processing_s / self.audio_s
        } else {
            0.0
        }
    }
}

fn is_wav(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("wav"))
}

/// A directory's identity, so that a walk enters each real directory once however many links
/// lead to it (a link to its own folder made one file be transcribed 41 times; two made the walk
/// explode).
#[cfg(unix)]
fn directory_identity(metadata: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((metadata.dev(), metadata.ino()))
}

#[cfg(not(unix))]
fn directory_identity(_: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
}

struct Walk<'a> {
    root: &'a Path,
    found: &'a mut Vec<BatchInput>,
    errors: &'a mut Vec<(PathBuf, PipelineError)>,
    entered: &'a mut std::collections::HashSet<(u64, u64)>,
}

impl Walk<'_> {
    fn folder_error(&mut self, dir: &Path, reason: String) {
        self.errors.push((
            dir.to_path_buf(),
            PipelineError::Audio {
                path: dir.to_path_buf(),
                reason,
            },
        ));
    }

    fn dir(&mut self, dir: &Path) {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => return self.folder_error(dir, format!("cannot read folder: {e}")),
        };
        let mut entries: Vec<std::fs::DirEntry> = entries.flatten().collect();
        entries.sort_by_key(|e| e.path());
        for entry in entries {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            // Links are followed to what they point at: a recording, or a folder not yet seen.
            let metadata = if kind.is_symlink() {
                match std::fs::metadata(&path) {
                    Ok(metadata) => metadata,
                    Err(_) => continue, // a dangling link
                }
            } else {
                match entry.metadata() {
                    Ok(metadata) => metadata,
                    Err(_) => continue,
                }
            };
            if metadata.is_dir() {
                match directory_identity(&metadata) {
                    Some(identity) if !self.entered.insert(identity) => continue,
                    None if kind.is_symlink() => continue,
                    _ => self.dir(&path),
                }
            } else if is_wav(&path) {
                let relative = path
                    .strip_prefix(self.root)
                    .unwrap_or(&path)
                    .with_extension("");
                self.found.push(BatchInput {
                    path,
                    output_stem: relative,
                });
            }
        }
    }
}

/// Expands files and folders into recordings; inputs that do not exist are returned as errors.
/// Folders are searched recursively; each real folder is entered once, whatever links lead to it.
pub fn collect_inputs(inputs: &[PathBuf]) -> (Vec<BatchInput>, Vec<(PathBuf, PipelineError)>) {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    let mut entered = std::collections::HashSet::new();
    for input in inputs {
        if input.is_dir() {
            let before = found.len();
            if let Some(identity) = std::fs::metadata(input)
                .ok()
                .as_ref()
                .and_then(directory_identity)
            {
                entered.insert(identity);
            }
            Walk {
                root: input,
                found: &mut found,
                errors: &mut errors,
                entered: &mut entered,
            }
            .dir(input);
            if found.len() == before {
                errors.push((
                    input.clone(),
                    PipelineError::Audio {
                        path: input.clone(),
                        reason: "no .wav files in this folder".into(),
                    },
                ));
            }
        } else {
            let stem = input
                .file_stem()
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("transcript"));
            found.push(BatchInput {
                path: input.clone(),
                output_stem: stem,
            });
        }
    }
    // The same recording named twice (or reached through a link) is transcribed once.
    let mut seen = std::collections::HashSet::new();
    found.retain(|input| {
        seen.insert(std::fs::canonicalize(&input.path).unwrap_or(input.path.clone()))
    });
    (found, errors)
}

/// Inputs whose outputs would land on the same file as an earlier input's (`a/visit.wav` and
/// `b/visit.wav`, or `rec.wav` and `rec.WAV`: names are compared ignoring case, as many disks
/// do), each with the input it collides with.
pub fn colliding_outputs(inputs: &[BatchInput]) -> Vec<(&BatchInput, &BatchInput)> {
    let mut by_name: std::collections::HashMap<String, &BatchInput> = Default::default();
    let mut collisions = Vec::new();
    for input in inputs {
        let name = input.output_stem.to_string_lossy().to_lowercase();
        match by_name.get(&name) {
            Some(first) => collisions.push((input, *first)),
            None => {
                by_name.insert(name, input);
            }
        }
    }
    collisions
}

/// The output files of one recording.
pub fn output_paths(dir: &Path, input: &BatchInput, formats: &[TranscriptFormat]) -> Vec<PathBuf> {
    formats
        .iter()
        .map(|format| {
            let mut name = input.output_stem.clone().into_os_string();
            name.push(".");
            name.push(format.extension());
            dir.join(name)
        })
        .collect()
}

/// Runs a batch. Events go to `on_event`; the summary is returned.
pub fn run_batch(
    request: &BatchRequest,
    speech: &mut Speech,
    mut speakers: Option<&mut Speakers>,
    on_event: &mut dyn FnMut(BatchEvent<'_>),
) -> BatchSummary {
    let mut summary = BatchSummary::default();
    let (inputs, errors) = collect_inputs(&request.inputs);
    for (path, error) in &errors {
        summary.failed += 1;
        on_event(BatchEvent::Failed { path, error });
    }
    // Two recordings writing one output file would lose one of them: refused before any work.
    if request.output_dir.is_some() {
        let collisions = colliding_outputs(&inputs);
        if !collisions.is_empty() {
            for (input, first) in collisions {
                summary.failed += 1;
                on_event(BatchEvent::Failed {
                    path: &input.path,
                    error: &PipelineError::Audio {
                        path: input.path.clone(),
                        reason: format!(
                            "its output would overwrite that of {} (nothing was transcribed; use \
                             separate --output folders or rename one)",
                            first.path.display()
                        ),
                    },
                });
            }
            return summary;
        }
    }
    let audio_s = inputs
        .iter()
        .filter_map(|input| WavSource::open(&input.path).ok())
        .map(|source| source.info().duration_s())
        .sum();
    on_event(BatchEvent::Started {
        files: inputs.len(),
        audio_s,
    });
    for (index, input) in inputs.iter().enumerate() {
        let outputs = match &request.output_dir {
            Some(dir) => output_paths(dir, input, &request.formats),
            None => Vec::new(),
        };
        if !request.force && !outputs.is_empty() && outputs.iter().all(|p| p.is_file()) {
            summary.skipped += 1;
            on_event(BatchEvent::Skipped { path: &input.path });
            continue;
        }
        on_event(BatchEvent::FileStarted {
            index,
            path: &input.path,
        });
        let result = speech
            .transcribe_wav(&input.path, &mut |done_s, total_s| {
                on_event(BatchEvent::Progress { done_s, total_s })
            })
            .and_then(|mut done| {
                if let Some(speakers) = speakers.as_deref_mut() {
                    speakers.label(
                        &input.path,
                        &mut done.transcript,
                        speech.recognizer.as_mut(),
                    )?;
                }
                if let Some(corrector) = &request.corrector {
                    correct_transcript(&mut done.transcript, corrector.as_ref());
                }
                write_outputs(&done, &outputs, &request.formats)?;
                Ok(done)
            });
        match result {
            Ok(done) => {
                summary.transcribed += 1;
                summary.audio_s += done.transcript.duration_s;
                summary.processing_s += done.processing_s;
                on_event(BatchEvent::FileDone {
                    result: &done,
                    outputs: &outputs,
                });
            }
            Err(error) => {
                summary.failed += 1;
                on_event(BatchEvent::Failed {
                    path: &input.path,
                    error: &error,
                });
            }
        }
    }
    summary
}

fn write_outputs(
    done: &FileTranscript,
    outputs: &[PathBuf],
    formats: &[TranscriptFormat],
) -> Result<()> {
    for (path, format) in outputs.iter().zip(formats) {
        if let Some(parent) = path.parent() {
            crate::output::create_private_dir_all(parent).map_err(|source| {
                PipelineError::Output {
                    path: path.clone(),
                    source,
                }
            })?;
        }
        write_private_atomically(path, render(done, *format).as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_searched_recursively_and_keep_their_structure() {
        let dir = std::env::temp_dir().join(format!("medscribe-batch-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("ward/a")).unwrap();
        for f in ["x.wav", "ward/y.WAV", "ward/a/z.wav", "ward/notes.txt"] {
            std::fs::write(dir.join(f), b"").unwrap();
        }
        let (found, errors) =
            collect_inputs(&[dir.clone(), PathBuf::from("/elsewhere/single.wav")]);
        assert!(errors.is_empty());
        let stems: Vec<String> = found
            .iter()
            .map(|i| i.output_stem.display().to_string())
            .collect();
        assert_eq!(stems, ["ward/a/z", "ward/y", "x", "single"]);
        let outs = output_paths(
            Path::new("/out"),
            &found[0],
            &[TranscriptFormat::Txt, TranscriptFormat::Srt],
        );
        assert_eq!(
            outs,
            [
                PathBuf::from("/out/ward/a/z.txt"),
                PathBuf::from("/out/ward/a/z.srt")
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_empty_folder_is_an_error() {
        let dir =
            std::env::temp_dir().join(format!("medscribe-batch-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (found, errors) = collect_inputs(std::slice::from_ref(&dir));
        assert!(found.is_empty());
        assert!(errors[0].1.to_string().contains("no .wav files"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    #[cfg(unix)]
    fn links_to_folders_are_entered_once_so_self_links_cannot_loop() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("recordings");
        std::fs::create_dir_all(root.join("ward")).unwrap();
        std::fs::write(root.join("visit.wav"), b"").unwrap();
        std::fs::write(root.join("ward/round.wav"), b"").unwrap();
        // A link to its own folder, two more to the root, and a link to a folder outside.
        std::os::unix::fs::symlink(&root, root.join("self")).unwrap();
        std::os::unix::fs::symlink(&root, root.join("ward/up")).unwrap();
        std::os::unix::fs::symlink("..", root.join("ward/parent")).unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("extra.wav"), b"").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("linked")).unwrap();
        let (found, errors) = collect_inputs(std::slice::from_ref(&root));
        assert!(errors.is_empty(), "{errors:?}");
        let stems: Vec<String> = found
            .iter()
            .map(|i| i.output_stem.display().to_string())
            .collect();
        assert_eq!(stems, ["linked/extra", "visit", "ward/round"]);
    }

    #[test]
    fn outputs_that_would_overwrite_each_other_are_found_before_any_work() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["a/visit.wav", "b/visit.wav", "c/rec.wav", "c/rec.WAV"] {
            let path = dir.path().join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, b"").unwrap();
        }
        let (found, _) = collect_inputs(&[
            dir.path().join("a/visit.wav"),
            dir.path().join("b/visit.wav"),
            dir.path().join("a/visit.wav"),
        ]);
        assert_eq!(found.len(), 2, "the same file named twice is one input");
        let collisions = colliding_outputs(&found);
        assert_eq!(collisions.len(), 1);
        assert!(collisions[0].0.path.ends_with("b/visit.wav"));
        let (found, _) = collect_inputs(&[dir.path().join("c")]);
        assert_eq!(colliding_outputs(&found).len(), 1, "rec.wav and rec.WAV");
        let (found, _) = collect_inputs(&[dir.path().join("a"), dir.path().join("c/rec.wav")]);
        assert!(colliding_outputs(&found).is_empty());
    }
}
