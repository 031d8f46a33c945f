//! Batch transcription of files and folders: inputs expanded recursively to `*.wav`, each file
//! processed on its own (a bad file is reported and the batch goes on), outputs written
//! atomically so an interrupted batch resumes where it stopped (existing outputs are skipped
//! unless forced).

use std::path::{Path, PathBuf};

use medscribe_asr::SpeechRecognizer;

use crate::error::{PipelineError, Result};
use crate::job::{transcribe_wav, FileTranscript, Segmentation};
use crate::output::write_private_atomically;
use crate::render::{render, TranscriptFormat};
use crate::segmenter::SpeechProbability;
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
    /// How recordings are cut for the model.
    pub segmentation: Segmentation,
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

fn walk(
    dir: &Path,
    root: &Path,
    found: &mut Vec<BatchInput>,
    errors: &mut Vec<(PathBuf, PipelineError)>,
) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            errors.push((
                dir.to_path_buf(),
                PipelineError::Audio {
                    path: dir.to_path_buf(),
                    reason: format!("cannot read folder: {e}"),
                },
            ));
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            walk(&path, root, found, errors);
        } else if is_wav(&path) {
            let relative = path.strip_prefix(root).unwrap_or(&path).with_extension("");
            found.push(BatchInput {
                path,
                output_stem: relative,
            });
        }
    }
}

/// Expands files and folders into recordings; inputs that do not exist are returned as errors.
pub fn collect_inputs(inputs: &[PathBuf]) -> (Vec<BatchInput>, Vec<(PathBuf, PipelineError)>) {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let before = found.len();
            walk(input, input, &mut found, &mut errors);
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
    (found, errors)
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
    recognizer: &mut dyn SpeechRecognizer,
    mut vad: Option<&mut (dyn SpeechProbability + '_)>,
    on_event: &mut dyn FnMut(BatchEvent<'_>),
) -> BatchSummary {
    let mut summary = BatchSummary::default();
    let (inputs, errors) = collect_inputs(&request.inputs);
    for (path, error) in &errors {
        summary.failed += 1;
        on_event(BatchEvent::Failed { path, error });
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
        let result = transcribe_wav(
            &input.path,
            recognizer,
            request.segmentation,
            vad.as_deref_mut(),
            &mut |done_s, total_s| on_event(BatchEvent::Progress { done_s, total_s }),
        )
        .and_then(|done| {
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
}
