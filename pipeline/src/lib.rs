//! The medscribe pipeline: audio sources (sound cards through cpal, WAV files, a test signal),
//! resampling to 16 kHz mono, voice activity segmentation, the live pipeline of stage threads
//! with its crash-safe recorder and session directories, batch jobs that feed recordings to a
//! speech recogniser, transcript files, the data directory with its installed models, and
//! private, atomic output files. It knows nothing about rendering: front ends (CLI, TUI) sit on
//! top.
#![deny(missing_docs)]

pub mod batch;
pub mod datadir;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod job;
pub mod live;
pub mod models;
pub mod output;
pub mod recorder;
pub mod recover;
pub mod render;
pub mod resample;
pub mod segmenter;
pub mod session;
pub mod source;
pub mod speakers;
pub mod speech;
pub mod timestamp;
pub mod wav;

pub use datadir::DataDir;
pub use error::{PipelineError, Result};
pub use job::{correct_transcript, transcribe_wav, Cutting, FileTranscript, TextCorrector};
pub use render::{render, TranscriptFormat};
pub use speech::{Segmentation, Speech, SpeechOptions};
pub use wav::{WavInfo, WavSource};
