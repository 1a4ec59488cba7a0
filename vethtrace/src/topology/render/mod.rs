//! Renderers of the topology model, pure functions writing to `impl Write`: the readable tree
//! (`text`), Graphviz (`dot`) and the one-line veth peer view (`peer`). JSON is the model itself
//! through serde.
//!
//! Owns: presentation only; nothing here reads the system.

pub mod dot;
pub mod peer;
pub mod text;
