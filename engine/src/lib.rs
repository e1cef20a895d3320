//! Gregor storage engine (being written).
