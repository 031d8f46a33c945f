//! The queue of finished utterances waiting for the speech model: two in memory, the rest
//! spilled to the session's `queue/` on disk, so a slow model never holds audio in memory.

use super::*;

/// Utterances for the speech model, in order: in the channel while it has room, then on disk.
pub(super) struct AsrQueue {
    pub(super) out: Sender<AsrJob>,
    pub(super) spilled: VecDeque<AsrJob>,
    pub(super) dir: PathBuf,
}

impl AsrQueue {
    pub(super) fn push(&mut self, segment: SpeechSegment) -> Result<()> {
        self.drain();
        if self.spilled.is_empty() {
            match self.out.try_send(AsrJob::Final(segment)) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(_)) => return Ok(()),
                Err(TrySendError::Full(AsrJob::Final(segment))) => return self.spill(segment),
                Err(TrySendError::Full(_)) => return Ok(()),
            }
        }
        self.spill(segment)
    }

    pub(super) fn spill(&mut self, segment: SpeechSegment) -> Result<()> {
        crate::output::own_private_dir(&self.dir).map_err(|source| PipelineError::Output {
            path: self.dir.clone(),
            source,
        })?;
        let file = self
            .dir
            .join(format!("{:012}-{:012}.f32", segment.start, segment.end));
        let bytes: Vec<u8> = segment
            .samples
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        crate::output::write_private_atomically(&file, &bytes)?;
        self.spilled.push_back(AsrJob::Spilled {
            start: segment.start,
            end: segment.end,
            file,
        });
        Ok(())
    }

    /// Moves waiting utterances into the channel as far as it has room.
    pub(super) fn drain(&mut self) {
        while let Some(job) = self.spilled.pop_front() {
            match self.out.try_send(job) {
                Ok(()) => {}
                Err(TrySendError::Full(job)) => {
                    self.spilled.push_front(job);
                    return;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.spilled.clear();
                    return;
                }
            }
        }
    }

    /// Waits until every utterance is in the channel.
    pub(super) fn finish(mut self) {
        while let Some(job) = self.spilled.pop_front() {
            if self.out.send(job).is_err() {
                return;
            }
        }
    }

    /// Offers a partial transcript job; dropped when the model is busy.
    pub(super) fn offer_partial(&mut self, start: usize, samples: &[f32]) -> bool {
        self.spilled.is_empty()
            && self.out.is_empty()
            && self
                .out
                .try_send(AsrJob::Partial {
                    start,
                    samples: samples.to_vec(),
                })
                .is_ok()
    }
}
