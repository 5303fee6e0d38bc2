//! The simulator's configuration: every field has a default, a TOML file may set any subset,
//! and unknown keys are rejected so a typo never silently does nothing.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::SimError;
use crate::faults::Faults;
use crate::profile::{Profile, DEFAULT_PROFILE};
use crate::toml_file::{self, TomlDocument};

/// Slowest and fastest simulated time: beyond them step durations stop being representable
/// (a 1e-310 scale makes a microsecond step last longer than `Duration` can hold) or useful.
pub const MIN_TIME_SCALE: f64 = 0.001;
pub const MAX_TIME_SCALE: f64 = 1_000_000.0;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Served model name; defaults to the profile's `model.name`.
    pub model: Option<String>,
    /// A built-in profile name or a path to a profile TOML.
    pub profile: String,
    /// Simulated time runs this many times faster than wall time (10 = ten times faster).
    /// Telemetry records wall time, so latencies shrink by the same factor.
    pub time_scale: f64,
    /// Seed of every random choice (fault injection, natural output lengths).
    pub seed: u64,
    pub scheduler: SchedulerConfig,
    pub kv_cache: KvCacheConfig,
    pub output: OutputConfig,
    /// Faults active for the whole run (a scenario adds timed ones on top).
    pub faults: Faults,
    /// A fault scenario TOML scheduling faults over simulated time.
    pub scenario: Option<PathBuf>,
    /// Serve `GET /metrics` in vLLM's Prometheus text format.
    pub metrics: MetricsFormat,
    /// Request spans: infermon's (default), vLLM's flat `llm_request` span, or both.
    pub trace_format: crate::vllm_trace::TraceFormat,
    /// Simulated GPUs whose telemetry follows the engine's load (0 = none).
    pub simulated_gpus: u32,
    /// Largest accepted request body; larger ones get 413.
    pub max_body_bytes: usize,
    /// The link a decode request pulls its KV cache over from the prefill worker
    /// (disaggregated prefill/decode; see `disagg`).
    pub kv_transport: crate::disagg::KvTransport,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            model: None,
            profile: DEFAULT_PROFILE.to_owned(),
            time_scale: 1.0,
            seed: 0,
            scheduler: SchedulerConfig::default(),
            kv_cache: KvCacheConfig::default(),
            output: OutputConfig::default(),
            faults: Faults::default(),
            scenario: None,
            metrics: MetricsFormat::Vllm,
            trace_format: crate::vllm_trace::TraceFormat::Infermon,
            simulated_gpus: 0,
            max_body_bytes: 4 * 1024 * 1024,
            kv_transport: crate::disagg::KvTransport::default(),
        }
    }
}

/// Continuous-batching limits (vLLM's names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// Most sequences in the running batch.
    pub max_num_seqs: u32,
    /// Most tokens computed in one step (prefill chunks plus one per decoding sequence).
    pub max_num_batched_tokens: u32,
    /// Most requests waiting to be scheduled for the first time; more are rejected with 503.
    /// Unbounded by default, as in vLLM, whose scheduler queues every request it is sent.
    pub max_waiting: Option<u32>,
    /// Split long prompts across steps instead of computing each prompt in one step.
    pub chunked_prefill: bool,
    /// Context length (prompt + output); defaults to the profile's `model.max_model_len`.
    pub max_model_len: Option<u32>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_num_seqs: 256,
            max_num_batched_tokens: 8192,
            max_waiting: None,
            chunked_prefill: true,
            max_model_len: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KvCacheConfig {
    /// Tokens per KV cache block.
    pub block_size: u32,
    /// Fraction of GPU memory the engine may use for weights plus KV cache.
    pub gpu_memory_utilization: f64,
    /// Reuse KV blocks of prompts that share a block-aligned prefix.
    pub prefix_caching: bool,
    /// Use exactly this many blocks instead of deriving the count from the profile (small
    /// caches make preemption easy to demonstrate and test).
    pub num_blocks: Option<u32>,
}

impl Default for KvCacheConfig {
    fn default() -> Self {
        Self {
            block_size: 16,
            gpu_memory_utilization: 0.9,
            prefix_caching: true,
            num_blocks: None,
        }
    }
}

/// How long simulated completions are when `max_tokens` does not cut them short.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutputConfig {
    /// Shortest natural completion, tokens.
    pub min_tokens: u32,
    /// Longest natural completion, tokens.
    pub max_tokens: u32,
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            min_tokens: 16,
            max_tokens: 256,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MetricsFormat {
    /// No `/metrics` endpoint (telemetry goes out through OpenTelemetry only).
    None,
    /// `GET /metrics` in vLLM's Prometheus text format, for testing the collector's vLLM
    /// normalisation without a GPU. The default: vLLM always serves `/metrics`.
    #[default]
    Vllm,
}

/// The configuration with the profile loaded and every derived limit computed.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub config: SimConfig,
    pub profile: Profile,
    pub model: String,
    pub max_model_len: u32,
    pub num_blocks: u32,
}

impl TomlDocument for SimConfig {}

impl SimConfig {
    /// Loads a configuration file; fields it does not set keep their defaults.
    pub fn load(path: &Path) -> Result<Self, SimError> {
        toml_file::load(path)
    }

    /// Parses a configuration; `origin` names it in error messages. Its limits are checked
    /// together with the profile, by [`resolve`](Self::resolve).
    pub fn from_toml(source: &str, origin: &str) -> Result<Self, SimError> {
        toml_file::parse(source, origin)
    }

    /// Loads the profile and checks that the limits are coherent (the same checks vLLM makes
    /// at start-up, so a request can never wait forever for capacity that cannot exist).
    pub fn resolve(&self) -> Result<Resolved, SimError> {
        let profile = Profile::resolve(&self.profile)?;
        let invalid = |field: &str, message: String| SimError::Invalid {
            origin: "simulator config".to_owned(),
            field: field.to_owned(),
            message,
        };
        if !(MIN_TIME_SCALE..=MAX_TIME_SCALE).contains(&self.time_scale) {
            return Err(invalid(
                "time_scale",
                format!(
                    // `{:?}` writes 1e-310 as such, not as 310 digits.
                    "must be between {MIN_TIME_SCALE} and {MAX_TIME_SCALE} (got {:?})",
                    self.time_scale
                ),
            ));
        }
        if self.scheduler.max_waiting == Some(0) {
            return Err(invalid(
                "scheduler.max_waiting",
                "must be positive (leave it out for an unbounded queue)".into(),
            ));
        }
        let sched = &self.scheduler;
        if sched.max_num_seqs == 0 || sched.max_num_batched_tokens == 0 {
            return Err(invalid(
                "scheduler.max_num_seqs / max_num_batched_tokens",
                "must be positive".into(),
            ));
        }
        let kv = &self.kv_cache;
        if kv.block_size == 0 {
            return Err(invalid("kv_cache.block_size", "must be positive".into()));
        }
        if !(kv.gpu_memory_utilization > 0.0 && kv.gpu_memory_utilization <= 1.0) {
            return Err(invalid(
                "kv_cache.gpu_memory_utilization",
                "must be in (0, 1]".into(),
            ));
        }
        if self.output.min_tokens == 0 || self.output.min_tokens > self.output.max_tokens {
            return Err(invalid(
                "output.min_tokens / max_tokens",
                "need 1 <= min_tokens <= max_tokens".into(),
            ));
        }
        self.faults.validate("faults")?;

        let max_model_len = sched.max_model_len.unwrap_or(profile.model.max_model_len);
        if max_model_len < 2 {
            return Err(invalid(
                "scheduler.max_model_len",
                "must be at least 2".into(),
            ));
        }
        let num_blocks = match kv.num_blocks {
            Some(n) => u64::from(n),
            None => profile.kv_blocks(kv.gpu_memory_utilization, kv.block_size),
        };
        let capacity_tokens = num_blocks * u64::from(kv.block_size);
        if capacity_tokens < u64::from(max_model_len) {
            return Err(invalid(
                "scheduler.max_model_len",
                format!(
                    "({max_model_len}) is larger than the KV cache can hold ({capacity_tokens} \
                     tokens in {num_blocks} blocks): lower scheduler.max_model_len or raise \
                     kv_cache.gpu_memory_utilization / kv_cache.num_blocks"
                ),
            ));
        }
        if !sched.chunked_prefill && sched.max_num_batched_tokens < max_model_len {
            return Err(invalid(
                "scheduler.max_num_batched_tokens",
                format!(
                    "({}) must be at least max_model_len ({max_model_len}) when chunked_prefill \
                     is off, or a long prompt could never be scheduled: enable chunked_prefill \
                     or lower scheduler.max_model_len",
                    sched.max_num_batched_tokens
                ),
            ));
        }
        let num_blocks = u32::try_from(num_blocks).map_err(|_| {
            invalid(
                "kv_cache",
                format!("{num_blocks} blocks is too many: raise kv_cache.block_size"),
            )
        })?;
        let model = self
            .model
            .clone()
            .unwrap_or_else(|| profile.model.name.clone());
        if model.trim().is_empty() {
            return Err(invalid("model", "must not be empty".into()));
        }
        Ok(Resolved {
            config: self.clone(),
            profile,
            model,
            max_model_len,
            num_blocks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_means_all_defaults() {
        assert_eq!(SimConfig::from_toml("", "x").unwrap(), SimConfig::default());
    }

    #[test]
    fn partial_file_overrides_only_what_it_sets() {
        let config = SimConfig::from_toml(
            "time_scale = 10.0\nmetrics = \"vllm\"\n[scheduler]\nmax_num_seqs = 8\n",
            "x",
        )
        .unwrap();
        assert_eq!(config.time_scale, 10.0);
        assert_eq!(config.metrics, MetricsFormat::Vllm);
        assert_eq!(config.scheduler.max_num_seqs, 8);
        assert_eq!(config.scheduler.max_num_batched_tokens, 8192);
    }

    #[test]
    fn unknown_keys_are_rejected_with_the_origin() {
        let err = SimConfig::from_toml("[scheduler]\nmax_seqs = 8\n", "sim.toml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("sim.toml:"), "{err}");
        assert!(err.contains("max_seqs"), "{err}");
    }

    #[test]
    fn default_config_resolves_against_the_default_profile() {
        let resolved = SimConfig::default().resolve().unwrap();
        assert_eq!(resolved.model, "llama-3.1-8b-instruct");
        assert_eq!(resolved.max_model_len, 131_072);
        assert_eq!(resolved.num_blocks, 29_043);
    }

    #[test]
    fn context_larger_than_the_cache_is_a_config_error() {
        let mut config = SimConfig::default();
        config.kv_cache.num_blocks = Some(4);
        let err = config.resolve().unwrap_err().to_string();
        assert!(err.contains("max_model_len"), "{err}");
        config.scheduler.max_model_len = Some(64);
        assert_eq!(config.resolve().unwrap().num_blocks, 4);
    }

    #[test]
    fn unchunked_prefill_needs_a_token_budget_for_the_longest_prompt() {
        let mut config = SimConfig::default();
        config.scheduler.chunked_prefill = false;
        let err = config.resolve().unwrap_err().to_string();
        assert!(err.contains("chunked_prefill"), "{err}");
        config.scheduler.max_model_len = Some(8192);
        config.resolve().unwrap();
    }
}
