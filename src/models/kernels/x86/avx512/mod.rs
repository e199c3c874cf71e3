//! AVX-512F kernels.

pub mod attention;
pub mod kquant;
pub mod panels;
