//! AVX-512F kernels.

pub mod attention;
pub mod panels;
