//! Simulated continuous-batching engine.
