//! The measurements, one module per group of the items.

pub mod docker;
pub mod footprint;
pub mod mcp;
pub mod port;
pub mod relay;
pub mod scale;
pub mod startup;
pub mod stop;
