//! Step time from a roofline model: a step takes as long as the slower of its compute and its
//! memory traffic, plus a fixed overhead.
//!
//! - Compute: 2 FLOPs per parameter per token computed (the weight matmuls), plus attention:
//!   4 × layers × hidden × (context the token attends to) per token (QKᵀ and AV).
//! - Memory: the weights are read once per step; every sequence's KV cache is read once and
//!   the new tokens' KV entries written.
//!
//! A decode step (one token per sequence) moves gigabytes of weights for a few hundred tokens,
//! so it is memory-bound; a prefill step computes thousands of tokens against the same weights,
//! so it is compute-bound. Neither efficiency factor is measured here: they are the profile's
//! stated assumptions.

use crate::profile::Profile;
use crate::scheduler::StepPlan;

/// The work of one step, summed over its sequences.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct StepWork {
    /// Tokens computed (prefill chunks plus one per decoding sequence).
    pub tokens: f64,
    /// Σ new tokens × (context + (new tokens + 1) / 2): the attention span, summed per token.
    pub attended: f64,
    /// KV entries read (every scheduled sequence's context).
    pub context: f64,
}

impl StepWork {
    pub fn of(plan: &StepPlan) -> Self {
        let mut work = StepWork::default();
        for s in &plan.scheduled {
            let new = f64::from(s.new_tokens);
            let context = f64::from(s.context_tokens);
            work.tokens += new;
            work.attended += new * (context + (new + 1.0) / 2.0);
            work.context += context;
        }
        work
    }
}

/// Seconds one step takes on `profile`'s hardware, and whether memory bound it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepTime {
    pub seconds: f64,
    pub compute_s: f64,
    pub memory_s: f64,
}

impl StepTime {
    #[cfg(test)]
    pub fn memory_bound(&self) -> bool {
        self.memory_s >= self.compute_s
    }
}

pub fn step_time(profile: &Profile, work: &StepWork) -> StepTime {
    let gpu = &profile.gpu;
    let model = &profile.model;
    let attention_flops =
        4.0 * f64::from(model.num_layers) * f64::from(model.hidden_size) * work.attended;
    let flops = 2.0 * model.params * work.tokens + attention_flops;
    let kv_bytes = model.kv_bytes_per_token as f64 * (work.context + work.tokens);
    let bytes = profile.weight_bytes() + kv_bytes;
    let compute_s = flops / (gpu.flops * gpu.compute_efficiency);
    let memory_s = bytes / (gpu.memory_bandwidth_bytes_per_s * gpu.memory_efficiency);
    StepTime {
        seconds: compute_s.max(memory_s) + gpu.step_overhead_s,
        compute_s,
        memory_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::Scheduled;

    fn plan(seqs: &[(u32, u32)]) -> StepPlan {
        StepPlan {
            scheduled: seqs
                .iter()
                .enumerate()
                .map(|(i, &(new_tokens, context_tokens))| Scheduled {
                    id: i as u64,
                    new_tokens,
                    context_tokens,
                    first_schedule: false,
                    resumed: false,
                    cached_tokens: 0,
                })
                .collect(),
            preempted: Vec::new(),
        }
    }

    #[test]
    fn decode_is_memory_bound_and_prefill_compute_bound() {
        let h100 = Profile::builtin("h100-80gb-llama-8b").unwrap();
        let decode = step_time(&h100, &StepWork::of(&plan(&[(1, 500); 32])));
        assert!(decode.memory_bound());
        let prefill = step_time(&h100, &StepWork::of(&plan(&[(4096, 0)])));
        assert!(!prefill.memory_bound());
    }

    #[test]
    fn single_decode_step_costs_the_weight_read_plus_overhead() {
        let h100 = Profile::builtin("h100-80gb-llama-8b").unwrap();
        let t = step_time(&h100, &StepWork::of(&plan(&[(1, 0)])));
        // 16.06 GB of weights (+ one token's KV) at 3.35 TB/s × 0.8, plus 1 ms overhead.
        let expected = (16.06e9 + 131_072.0) / (3.35e12 * 0.8) + 0.001;
        assert!((t.seconds - expected).abs() < 1e-9, "{t:?}");
    }

    #[test]
    fn a100_is_slower_than_h100_for_the_same_batch() {
        let h100 = Profile::builtin("h100-80gb-llama-8b").unwrap();
        let a100 = Profile::builtin("a100-40gb-llama-8b").unwrap();
        for batch in [plan(&[(1, 1000); 64]), plan(&[(2048, 0)])] {
            let work = StepWork::of(&batch);
            assert!(step_time(&a100, &work).seconds > step_time(&h100, &work).seconds);
        }
    }

    #[test]
    fn longer_contexts_make_decode_slower() {
        let h100 = Profile::builtin("h100-80gb-llama-8b").unwrap();
        let short = step_time(&h100, &StepWork::of(&plan(&[(1, 100); 64])));
        let long = step_time(&h100, &StepWork::of(&plan(&[(1, 4000); 64])));
        assert!(long.seconds > short.seconds);
    }
}
