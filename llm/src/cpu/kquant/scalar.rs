//! The tile products in plain Rust: any CPU, and the reference the vector kernels are tested
//! against.

use super::tile::{
    q4k_d, q4k_dmin, q4k_min, q4k_scale, q4k_value, q5k_value, q6k_d, q6k_scale, q6k_value,
    TileLayout, TILE_ROWS,
};
use super::{InputBlocks, KQuant, POSITIONS_PER_PASS, QK_K};

/// `sums[p][r]`: row `r` of the tile times input position `p`.
pub(super) fn tile(
    kind: KQuant,
    tile: &[u8],
    inputs: &InputBlocks,
    sums: &mut [[f32; TILE_ROWS]; POSITIONS_PER_PASS],
) {
    let block_bytes = TileLayout::block_bytes(kind);
    for (p, row_sums) in sums.iter_mut().enumerate().take(inputs.count) {
        for (r, sum) in row_sums.iter_mut().enumerate() {
            let mut acc = 0f32;
            for (b, block) in tile
                .chunks_exact(block_bytes)
                .enumerate()
                .take(inputs.blocks)
            {
                let at = p * inputs.blocks + b;
                let y = &inputs.values[at * QK_K..(at + 1) * QK_K];
                let y_scale = inputs.scales[at];
                acc += match kind {
                    KQuant::Q4K | KQuant::Q5K => {
                        let value = |v| match kind {
                            KQuant::Q4K => q4k_value(block, r, v),
                            _ => q5k_value(block, r, v),
                        };
                        let dot: i32 = (0..QK_K)
                            .map(|v| {
                                i32::from(q4k_scale(block, r, v / 32))
                                    * i32::from(value(v))
                                    * i32::from(y[v])
                            })
                            .sum();
                        let sums32 = &inputs.sums32[at * 8..(at + 1) * 8];
                        let min_dot: i32 = (0..8)
                            .map(|s| i32::from(q4k_min(block, r, s)) * i32::from(sums32[s]))
                            .sum();
                        y_scale * q4k_d(block, r) * dot as f32
                            - y_scale * q4k_dmin(block, r) * min_dot as f32
                    }
                    KQuant::Q6K => {
                        let dot: i32 = (0..QK_K)
                            .map(|v| {
                                i32::from(q6k_scale(block, r, v / 16))
                                    * i32::from(q6k_value(block, r, v) - 32)
                                    * i32::from(y[v])
                            })
                            .sum();
                        y_scale * q6k_d(block, r) * dot as f32
                    }
                };
            }
            *sum = acc;
        }
    }
}
