//! Gregor load tools (being written).
