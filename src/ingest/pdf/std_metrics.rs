//! Advance widths of the standard 14 fonts, for PDFs that use them without
//! a /Widths array. ASCII is exact (Adobe's AFM metrics); other codes get the
//! font's typical width, which is close enough to place word gaps.

const HELVETICA: [u16; 95] = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556,
    556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556, 1015, 667, 667, 722, 722, 667,
    611, 778, 722, 278, 500, 667, 556, 833, 722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667,
    667, 611, 278, 278, 278, 469, 556, 333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500,
    222, 833, 556, 556, 556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584,
];
const TIMES: [u16; 95] = [
    250, 333, 408, 500, 500, 833, 778, 180, 333, 333, 500, 564, 250, 333, 250, 278, 500, 500, 500,
    500, 500, 500, 500, 500, 500, 500, 278, 278, 564, 564, 564, 444, 921, 722, 667, 667, 722, 611,
    556, 722, 722, 333, 389, 722, 611, 889, 722, 722, 556, 722, 667, 556, 611, 722, 722, 944, 722,
    722, 611, 333, 278, 333, 469, 500, 333, 444, 500, 444, 500, 444, 333, 500, 500, 278, 278, 500,
    278, 778, 500, 500, 500, 500, 333, 389, 278, 500, 500, 722, 500, 500, 444, 480, 200, 480, 541,
];

fn helvetica(code: u8) -> f32 {
    match code {
        32..=126 => f32::from(HELVETICA[usize::from(code - 32)]),
        _ => 556.0,
    }
}

fn times(code: u8) -> f32 {
    match code {
        32..=126 => f32::from(TIMES[usize::from(code - 32)]),
        _ => 500.0,
    }
}

fn courier(_: u8) -> f32 {
    600.0
}

/// The width table (in 1/1000 em) for a standard font name, if it is one.
pub fn widths_for(base_font: &str) -> Option<fn(u8) -> f32> {
    let f = base_font.to_ascii_lowercase();
    if f.starts_with("courier") {
        Some(courier)
    } else if f.starts_with("helvetica") || f.starts_with("arial") {
        Some(helvetica)
    } else if f.starts_with("times") {
        Some(times)
    } else {
        None
    }
}
