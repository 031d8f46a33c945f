//! The key/value cache of one layer.

use super::*;

/// Keys and values seen so far by one layer, `[1, kv_heads, rows, head_dim]` buffers with room to
/// grow: a step writes its rows in place instead of copying the whole cache. Row `r` holds
/// position `start + r`; rows before `first` are no longer visible to anyone.
#[derive(Debug, Clone, Default)]
pub(super) struct KvCache {
    pub(super) buffers: Option<(Tensor, Tensor)>,
    pub(super) start: usize,
    pub(super) first: usize,
    pub(super) used: usize,
}

impl KvCache {
    /// Adds the keys and values of positions `position..position + len` and returns those a
    /// query among them can see: all kept rows, or for a sliding layer (`window`) only the last
    /// `window - 1` before the new ones. Returns (keys, values, position of the first key).
    pub(super) fn append(
        &mut self,
        keys: &Tensor,
        values: &Tensor,
        position: usize,
        window: Option<usize>,
    ) -> Result<(Tensor, Tensor, usize)> {
        let len = keys.dim(2)?;
        if self.buffers.is_none() {
            self.start = position;
            self.first = 0;
            self.used = 0;
        }
        // Rows still needed by these and later queries.
        let first = match window {
            Some(window) => self.used.saturating_sub(window - 1).max(self.first),
            None => self.first,
        };
        let capacity = self.buffers.as_ref().map_or(Ok(0), |(k, _)| k.dim(2))?;
        if self.used + len > capacity {
            // Start over in a buffer twice what is kept, moving the kept rows to the front.
            let kept = self.used - first;
            let rows = ((kept + len) * 2).max(64);
            let (heads, head_dim) = (keys.dim(1)?, keys.dim(3)?);
            let grow = |old: Option<&Tensor>| -> Result<Tensor> {
                let buffer =
                    Tensor::zeros((1, heads, rows, head_dim), keys.dtype(), keys.device())?;
                if let Some(old) = old.filter(|_| kept > 0) {
                    buffer.slice_set(&old.narrow(2, first, kept)?.contiguous()?, 2, 0)?;
                }
                Ok(buffer)
            };
            let old = self.buffers.take();
            self.buffers = Some((
                grow(old.as_ref().map(|(k, _)| k))?,
                grow(old.as_ref().map(|(_, v)| v))?,
            ));
            self.start += first;
            self.used = kept;
            self.first = 0;
        } else {
            self.first = first;
        }
        let Some((key_buffer, value_buffer)) = &self.buffers else {
            return Err(LlmError::Internal(
                "key/value cache lost its buffers".into(),
            ));
        };
        key_buffer.slice_set(&keys.contiguous()?, 2, self.used)?;
        value_buffer.slice_set(&values.contiguous()?, 2, self.used)?;
        self.used += len;
        let visible = self.used - self.first;
        Ok((
            key_buffer.narrow(2, self.first, visible)?,
            value_buffer.narrow(2, self.first, visible)?,
            self.start + self.first,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_returns_what_each_chunk_may_see_while_it_grows_and_slides() {
        let device = Device::Cpu;
        let (heads, head_dim) = (2usize, 3usize);
        // Row p of every key holds the value p, values hold -p: what comes back names positions.
        let chunk = |start: usize, len: usize, sign: f32| {
            let data: Vec<f32> = (0..heads)
                .flat_map(|_| (start..start + len).flat_map(|p| [sign * p as f32; 3]))
                .collect();
            Tensor::from_vec(data, (1, heads, len, head_dim), &device).unwrap()
        };
        for window in [None, Some(5), Some(40)] {
            let mut cache = KvCache::default();
            let mut position = 7; // a conversation need not start at 0
            let first_position = position;
            for len in [1, 3, 1, 1, 60, 1, 1, 2, 130, 1, 1, 1, 9, 1] {
                let (keys, values, key_start) = cache
                    .append(
                        &chunk(position, len, 1.0),
                        &chunk(position, len, -1.0),
                        position,
                        window,
                    )
                    .unwrap();
                let visible_from = match window {
                    Some(w) => position.saturating_sub(w - 1).max(first_position),
                    None => first_position,
                };
                let expected: Vec<f32> = (visible_from..position + len).map(|p| p as f32).collect();
                assert_eq!(key_start, visible_from, "window {window:?}, len {len}");
                for head in 0..heads {
                    let column = |t: &Tensor| -> Vec<f32> {
                        t.narrow(1, head, 1)
                            .unwrap()
                            .narrow(3, 0, 1)
                            .unwrap()
                            .flatten_all()
                            .unwrap()
                            .to_vec1()
                            .unwrap()
                    };
                    assert_eq!(column(&keys), expected, "window {window:?}, len {len}");
                    let negated: Vec<f32> = expected.iter().map(|p| -p).collect();
                    assert_eq!(column(&values), negated);
                }
                position += len;
            }
        }
    }
}
