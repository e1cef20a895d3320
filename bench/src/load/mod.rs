//! load tools (next)
