//! The medscribe pipeline: audio sources (WAV files now; devices later), resampling to 16 kHz
//! mono, batch jobs that feed recordings to a speech recogniser, the data directory and private,
//! atomic output files. It knows nothing about rendering: front ends (CLI, TUI) sit on top.
#![deny(missing_docs)]

pub mod datadir;
pub mod error;
pub mod job;
pub mod output;
pub mod resample;
pub mod wav;

pub use datadir::DataDir;
pub use error::{PipelineError, Result};
pub use job::{transcribe_wav, FileTranscript};
pub use wav::{WavInfo, WavSource};
