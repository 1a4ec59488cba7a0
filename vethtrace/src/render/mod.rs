//! Rendering: pure functions from correlated packets and findings to text or JSON, writing to
//! `impl Write` so they are tested without a kernel.

pub mod json;
pub mod path;
pub mod pcapng;
pub mod text;
