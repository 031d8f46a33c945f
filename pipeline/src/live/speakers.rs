//! Speaker labels while a recording goes on: the 16 kHz audio is fed to a streaming diarizer,
//! and whenever it has labelled more windows, the turns so far (each local speaker given a
//! speaker as it came) go to the transcript stage, which labels the lines they cover. When the
//! audio ends, every local speaker is clustered again and every line labelled by those turns.
//! A labelled line that spans a change of speaker is cut while the recording goes on (the
//! transcript stage asks the speech model, which keeps recent utterances, to transcribe its
//! parts again); [`crate::session::Session::label_speakers`] cuts the rest by the final turns.

use medscribe_asr::diarize::{SpeakerTurn, TurnOptions};

use super::*;
use crate::speakers::{Floor, Speakers};

/// The turns so far, as who has the floor when (worked out here, once per update, not once per
/// line by the transcript stage), and up to where (seconds) they are known.
pub(super) struct TurnsSoFar {
    pub floor: Floor,
    pub until_s: f64,
}

impl TurnsSoFar {
    pub(super) fn new(turns: &[SpeakerTurn], until_s: f64) -> Self {
        Self {
            floor: Floor::of(turns),
            until_s,
        }
    }
}

pub(super) fn speakers_stage(
    speakers: &mut Speakers,
    audio: Receiver<Vec<f32>>,
    out: Sender<TurnsSoFar>,
    events: &Sender<LiveEvent>,
) {
    let clusters = speakers.clusters();
    let mut diarizer = speakers.diarizer();
    let options = TurnOptions::default();
    let mut labelled_s = 0.0;
    let warn = |error: medscribe_asr::AsrError| {
        let _ = events.send(LiveEvent::Warning(format!(
            "speakers are not told apart during the recording ({error}); they will be when it \
             ends"
        )));
    };
    for block in audio.iter() {
        if let Err(error) = diarizer.push(&block) {
            warn(error);
            // Drain, so that the resampler is never held up.
            for _ in audio.iter() {}
            return;
        }
        if diarizer.labelled_s() > labelled_s {
            labelled_s = diarizer.labelled_s();
            let turns = diarizer.turns_so_far(clusters, &options);
            if out.send(TurnsSoFar::new(&turns, labelled_s)).is_err() {
                return;
            }
        }
    }
    // The audio has ended: the last windows, and every local speaker clustered again, label
    // every line, the last ones included.
    match diarizer.finish(clusters, &options) {
        Ok(turns) => {
            let _ = out.send(TurnsSoFar::new(&turns, f64::INFINITY));
        }
        Err(error) => warn(error),
    }
}
