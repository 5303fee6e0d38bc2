//! infermon: OpenTelemetry-native observability for LLM inference.
pub mod contract;
