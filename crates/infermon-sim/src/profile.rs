//! Hardware/model profiles: the numbers the roofline step-time model and the KV cache size are
//! derived from. Two profiles are built in (their TOML lives in `profiles/`); users can copy
//! one, edit it, and point the simulator at the file.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::SimError;
use crate::toml_file::{self, TomlDocument};

/// Built-in profiles: (name, TOML source).
const BUILTIN: &[(&str, &str)] = &[
    (
        "h100-80gb-llama-8b",
        include_str!("../profiles/h100-80gb-llama-8b.toml"),
    ),
    (
        "a100-40gb-llama-8b",
        include_str!("../profiles/a100-40gb-llama-8b.toml"),
    ),
];

/// The profile used when the configuration names none.
pub const DEFAULT_PROFILE: &str = "h100-80gb-llama-8b";

/// A simulated GPU and the model it serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    pub gpu: GpuSpec,
    pub model: ModelSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuSpec {
    pub name: String,
    pub memory_bytes: u64,
    pub memory_bandwidth_bytes_per_s: f64,
    /// Peak dense FLOP/s at the model's precision.
    pub flops: f64,
    /// Achieved fraction of peak bandwidth (0–1].
    pub memory_efficiency: f64,
    /// Achieved fraction of peak FLOP/s (0–1].
    pub compute_efficiency: f64,
    /// Fixed cost of every engine step, seconds.
    pub step_overhead_s: f64,
    pub power_limit_watts: f64,
    pub idle_power_watts: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// The model name served by default (`GET /v1/models`, `model` in requests).
    pub name: String,
    pub params: f64,
    pub bytes_per_param: f64,
    pub num_layers: u32,
    pub hidden_size: u32,
    pub kv_bytes_per_token: u64,
    pub max_model_len: u32,
}

impl Profile {
    /// Names of the built-in profiles.
    pub fn builtin_names() -> impl Iterator<Item = &'static str> {
        BUILTIN.iter().map(|(name, _)| *name)
    }

    /// A built-in profile by name.
    pub fn builtin(name: &str) -> Result<Self, SimError> {
        let (_, source) = BUILTIN
            .iter()
            .find(|(builtin, _)| *builtin == name)
            .ok_or_else(|| SimError::UnknownProfile {
                name: name.to_owned(),
                known: Self::builtin_names().collect::<Vec<_>>().join(", "),
            })?;
        Self::from_toml(source, name)
    }

    /// A profile from a TOML file.
    pub fn load(path: &Path) -> Result<Self, SimError> {
        toml_file::load(path)
    }

    /// A built-in name, or else a path to a profile TOML (anything ending in `.toml` or
    /// containing a path separator).
    pub fn resolve(name_or_path: &str) -> Result<Self, SimError> {
        let looks_like_path = name_or_path.ends_with(".toml")
            || name_or_path.contains(std::path::MAIN_SEPARATOR)
            || name_or_path.contains('/');
        if looks_like_path {
            Self::load(Path::new(name_or_path))
        } else {
            Self::builtin(name_or_path)
        }
    }

    /// Parses and validates a profile; `origin` names it in error messages.
    pub fn from_toml(source: &str, origin: &str) -> Result<Self, SimError> {
        toml_file::parse(source, origin)
    }
}

impl TomlDocument for Profile {
    fn validate(&self, origin: &str) -> Result<(), SimError> {
        let invalid = |field: &str, why: &str| SimError::Invalid {
            origin: origin.to_owned(),
            field: field.to_owned(),
            message: why.to_owned(),
        };
        let gpu = &self.gpu;
        let model = &self.model;
        let positive = [
            (
                "gpu.memory_bandwidth_bytes_per_s",
                gpu.memory_bandwidth_bytes_per_s,
            ),
            ("gpu.flops", gpu.flops),
            ("model.params", model.params),
            ("model.bytes_per_param", model.bytes_per_param),
        ];
        for (field, value) in positive {
            if !(value.is_finite() && value > 0.0) {
                return Err(invalid(field, "must be a positive number"));
            }
        }
        for (field, value) in [
            ("gpu.memory_efficiency", gpu.memory_efficiency),
            ("gpu.compute_efficiency", gpu.compute_efficiency),
        ] {
            if !(value > 0.0 && value <= 1.0) {
                return Err(invalid(field, "must be in (0, 1]"));
            }
        }
        if !(gpu.step_overhead_s.is_finite() && gpu.step_overhead_s >= 0.0) {
            return Err(invalid("gpu.step_overhead_s", "must be zero or positive"));
        }
        if model.kv_bytes_per_token == 0 {
            return Err(invalid("model.kv_bytes_per_token", "must be positive"));
        }
        if model.max_model_len == 0 {
            return Err(invalid("model.max_model_len", "must be positive"));
        }
        if model.num_layers == 0 || model.hidden_size == 0 {
            return Err(invalid(
                "model.num_layers / model.hidden_size",
                "must be positive",
            ));
        }
        if self.weight_bytes() >= gpu.memory_bytes as f64 {
            return Err(invalid(
                "gpu.memory_bytes",
                "the model's weights (params × bytes_per_param) do not fit in GPU memory",
            ));
        }
        Ok(())
    }
}

impl Profile {
    /// Bytes of model weights: params × bytes per parameter.
    pub fn weight_bytes(&self) -> f64 {
        self.model.params * self.model.bytes_per_param
    }

    /// KV cache blocks that fit, as vLLM sizes its cache:
    /// (GPU memory × gpu_memory_utilization − weights) / (KV bytes per token × block size).
    /// vLLM also subtracts activation and CUDA-graph memory measured by a profiling run; the
    /// simulator leaves that to a lower `gpu_memory_utilization`.
    pub fn kv_blocks(&self, gpu_memory_utilization: f64, block_size: u32) -> u64 {
        let budget = self.gpu.memory_bytes as f64 * gpu_memory_utilization - self.weight_bytes();
        if budget <= 0.0 || block_size == 0 {
            return 0;
        }
        let block_bytes = self.model.kv_bytes_per_token as f64 * f64::from(block_size);
        (budget / block_bytes).floor() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_profiles_parse_and_validate() {
        for name in Profile::builtin_names() {
            let profile = Profile::builtin(name).unwrap();
            assert_eq!(profile.name, name);
        }
    }

    #[test]
    fn kv_blocks_follow_vllm_sizing() {
        let profile = Profile::builtin("h100-80gb-llama-8b").unwrap();
        // (85_520_809_984 × 0.9 − 8.03e9 × 2) / (131072 × 16) = 29_043.5… → 29_043 blocks.
        assert_eq!(profile.kv_blocks(0.9, 16), 29_043);
        let a100 = Profile::builtin("a100-40gb-llama-8b").unwrap();
        // (42_949_672_960 × 0.9 − 16.06e9) / 2_097_152 = 10_773.99… → 10_773 blocks.
        assert_eq!(a100.kv_blocks(0.9, 16), 10_773);
        // Utilisation too low for the weights: no cache at all, not a negative count.
        assert_eq!(profile.kv_blocks(0.1, 16), 0);
    }

    #[test]
    fn unknown_builtin_lists_the_known_ones() {
        let err = Profile::builtin("h200").unwrap_err().to_string();
        assert!(err.contains("h100-80gb-llama-8b"), "{err}");
    }

    #[test]
    fn invalid_profile_names_the_field() {
        let source = include_str!("../profiles/h100-80gb-llama-8b.toml")
            .replace("memory_efficiency = 0.8", "memory_efficiency = 1.5");
        let err = Profile::from_toml(&source, "custom.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("gpu.memory_efficiency"), "{err}");
        assert!(err.contains("custom.toml"), "{err}");
    }
}
