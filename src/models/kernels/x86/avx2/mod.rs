//! AVX2 (with FMA and F16C) kernels.

pub mod attention;
pub mod kquant;
pub mod ktile;
pub mod panels;
pub mod q8;
